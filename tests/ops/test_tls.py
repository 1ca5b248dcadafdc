"""
TLS listeners: TLS 1.2 at least, certificate reload (in process and by
SIGHUP to a real twistd), unusable files refused at start-up. The browser
side (Chromium trusting the test CA) is in tests/e2e/test_tls_console.py.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.python.usage import UsageError
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.rfb.pki import _ca, _key_pem, _leaf, make_pki
from tests.support.twistd import start_twistd_async
from txvnc.service.tls import TLSConfigError, server_endpoint
from txvnc.tap import Options


def peer_serial(port: int, ca: Path, maximum: ssl.TLSVersion | None = None) -> int:
    """
    Connect with Python's ssl (trusting C{ca}) and return the server
    certificate's serial number.
    """
    context = ssl.create_default_context(cafile=str(ca))
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        context.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def second_server_cert(directory: Path, pki) -> tuple[Path, Path]:
    """
    Another server certificate from a new CA written beside the first
    (same names as the first CA's, so a test can swap files).
    """
    ca, ca_key = _ca("txvnc test CA 2")
    cert, key = _leaf(ca, ca_key, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, True)
    (directory / "ca2.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server2.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server2-key.pem").write_bytes(_key_pem(key))
    return directory / "server2.pem", directory / "server2-key.pem"


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


@pytest_twisted.ensureDeferred
async def test_reload_serves_the_new_certificate(tmp_path, pki):
    """After reload, new connections get the new certificate; bad files keep the old one."""
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    endpoint = server_endpoint(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    port = await endpoint.listen(Site(Resource()))
    try:
        number = port.getHost().port
        assert await deferToThread(peer_serial, number, pki.ca_cert) == serial_of(
            pki.server_cert
        )
        new_cert, new_key = second_server_cert(tmp_path, pki)
        cert.write_bytes(b"not a certificate")
        with pytest.raises(TLSConfigError, match=r"live-cert\.pem"):
            endpoint.tls.reload()
        assert await deferToThread(peer_serial, number, pki.ca_cert) == serial_of(
            pki.server_cert
        )
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        endpoint.tls.reload()
        assert await deferToThread(
            peer_serial, number, tmp_path / "ca2.pem"
        ) == serial_of(new_cert)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tls_below_1_2_is_refused(pki):
    """A client limited to TLS 1.1 cannot connect; TLS 1.2 and 1.3 can."""
    endpoint = server_endpoint(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={pki.server_key}:certKey={pki.server_cert}",
    )
    port = await endpoint.listen(Site(Resource()))
    try:
        number = port.getHost().port
        with pytest.raises(ssl.SSLError):
            await deferToThread(peer_serial, number, pki.ca_cert, ssl.TLSVersion.TLSv1_1)
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            assert await deferToThread(peer_serial, number, pki.ca_cert, version)
    finally:
        await port.stopListening()


def test_unusable_files_are_a_usage_error(tmp_path, pki, monkeypatch):
    """A missing or mismatched certificate is found before start-up, naming the option."""
    monkeypatch.chdir(tmp_path)
    novnc = tmp_path / "novnc" / "core"
    novnc.mkdir(parents=True)
    (novnc / "rfb.js").write_text("")
    monkeypatch.setenv("TXVNC_NOVNC_DIR", str(tmp_path / "novnc"))
    with pytest.raises(UsageError, match=r"--listen: .*no-such\.pem: No such file"):
        Options().parseOptions(
            ["--listen", f"ssl:6443:privateKey={tmp_path}/no-such.pem", "--store", "memory:"]
        )
    with pytest.raises(UsageError, match=r"--api-listen: .*not a matching"):
        Options().parseOptions(
            [
                "--api-listen",
                f"ssl:6444:privateKey={pki.client_key}:certKey={pki.server_cert}",
                "--store",
                "memory:",
                "--consoleauth-url",
                "https://127.0.0.1:6444",
            ]
        )


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_sighup_reloads_a_real_twistd_certificate(tmp_path, pki):
    """A real twistd serves the new certificate after SIGHUP, with its HSTS page over https."""
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    server = await start_twistd_async(
        tmp_path,
        listen=f"ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    proxy_port = server.proxy_port
    try:
        assert await deferToThread(peer_serial, proxy_port, pki.ca_cert) == serial_of(
            pki.server_cert
        )
        new_cert, new_key = second_server_cert(tmp_path, pki)
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        since = server.log.mark()
        server.signal(signal.SIGHUP)
        await server.wait_for(r"TLS certificate reloaded from", since)
        assert await deferToThread(
            peer_serial, proxy_port, tmp_path / "ca2.pem"
        ) == serial_of(new_cert)
    finally:
        server.signal(signal.SIGTERM)
        assert await server.ended() == 0


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_token_api_over_tls(tmp_path, pki):
    """With the API on an ssl: listener, the proxy checks tokens over https trusting --consoleauth-ca."""
    from tests.ops.test_shutdown import browse
    from tests.support.fakevnc import FakeVNCServer
    from txvnc.httppool import pooled_http_client

    vnc = FakeVNCServer()
    server = await start_twistd_async(
        tmp_path,
        "--consoleauth-ca",
        str(pki.ca_cert),
        api_listen=(
            f"ssl:{{port}}:interface=127.0.0.1:privateKey={pki.server_key}"
            f":certKey={pki.server_cert}"
        ),
    )
    proxy_port, api_port = server.proxy_port, server.api_port
    http = pooled_http_client(reactor, ca_file=str(pki.ca_cert))
    try:
        key = server.api_key
        response = await http.post(
            f"https://127.0.0.1:{api_port}/v1/tokens",
            json={"host": "127.0.0.1", "port": vnc.address.port},
            headers={"Authorization": "Bearer " + key},
        )
        assert response.code == 201
        token = (await response.json())["token"]
        # The proxy's check of the API over https, in detail on the API port
        # (the proxy's public /readyz gives the status only).
        response = await http.get(f"https://127.0.0.1:{api_port}/readyz")
        assert (await response.json())["checks"]["token_api"] == "ok"
        connected = vnc.next_connection()
        browser = await browse(proxy_port, token)
        await connected
        browser.sendClose(1000)
        await browser.closed
    finally:
        await http._agent._pool.closeCachedConnections()
        server.signal(signal.SIGTERM)
        assert await server.ended() == 0
        await vnc.stop()
