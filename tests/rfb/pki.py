"""
A throwaway certificate authority for VeNCrypt tests: a CA, a server
certificate for 127.0.0.1 and localhost, and a client certificate, written
as PEM files in the layouts Xtigervnc and qemu's tls-creds-x509 expect.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class PKI:
    """
    Paths of the PEM files; C{qemu_dir} holds ca-cert.pem, server-cert.pem
    and server-key.pem for C{-object tls-creds-x509,dir=...}.
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    qemu_dir: Path
    other_ca_cert: Path
    #: A server certificate from the same CA naming only another host
    #: (C{compute-1.example}), as a nova compute's often is.
    other_server_cert: Path
    other_server_key: Path
    #: A server certificate from the same CA with no subjectAltName at all,
    #: its common name C{127.0.0.1} (as older tools still make them).
    bare_server_cert: Path
    bare_server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    server: bool,
    names: list[x509.GeneralName] | None = None,
    san: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if server and san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                names
                or [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> PKI:
    """
    Write a fresh CA, server and client certificate under C{directory}.
    """
    pem = serialization.Encoding.PEM
    ca, ca_key = _ca("txvnc test CA")
    server, server_key = _leaf(ca, ca_key, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, True)
    client, client_key = _leaf(ca, ca_key, "txvnc proxy", ExtendedKeyUsageOID.CLIENT_AUTH, False)
    other_ca, _ = _ca("some other CA")
    other_server, other_server_key = _leaf(
        ca,
        ca_key,
        "compute-1.example",
        ExtendedKeyUsageOID.SERVER_AUTH,
        True,
        [x509.DNSName("compute-1.example")],
    )
    bare_server, bare_server_key = _leaf(
        ca, ca_key, "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, True, san=False
    )
    qemu_dir = directory / "qemu-tls"
    qemu_dir.mkdir()
    files = {
        "ca.pem": ca.public_bytes(pem),
        "server.pem": server.public_bytes(pem),
        "server-key.pem": _key_pem(server_key),
        "client.pem": client.public_bytes(pem),
        "client-key.pem": _key_pem(client_key),
        "other-ca.pem": other_ca.public_bytes(pem),
        "other-server.pem": other_server.public_bytes(pem),
        "other-server-key.pem": _key_pem(other_server_key),
        "bare-server.pem": bare_server.public_bytes(pem),
        "bare-server-key.pem": _key_pem(bare_server_key),
        "qemu-tls/ca-cert.pem": ca.public_bytes(pem),
        "qemu-tls/server-cert.pem": server.public_bytes(pem),
        "qemu-tls/server-key.pem": _key_pem(server_key),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600)
    return PKI(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        qemu_dir=qemu_dir,
        other_ca_cert=directory / "other-ca.pem",
        other_server_cert=directory / "other-server.pem",
        other_server_key=directory / "other-server-key.pem",
        bare_server_cert=directory / "bare-server.pem",
        bare_server_key=directory / "bare-server-key.pem",
    )
