"""
TLS listeners whose certificate can be reloaded (SIGHUP) without a restart.

C{ssl:} endpoint strings keep Twisted's syntax (C{ssl:6443:privateKey=
key.pem:certKey=cert.pem}, with C{interface=}, C{backlog=} and
C{extraCertChain=}), but txvnc builds the listener itself so that:

- the minimum protocol is TLS 1.2, stated here (C{raiseMinimumTo}) rather
  than left to Twisted: it is Twisted's own default since 22.8, and stated,
  it holds whatever Twisted is installed, while a newer Twisted that raises
  its default still raises ours. The ciphers are Twisted's default list for
  TLS 1.2 (forward-secret AES-GCM and ChaCha20 first; no aNULL, MD5 or
  DSS) and OpenSSL's TLS 1.3 suites, all of them;
- L{ReloadableTLS.reload} reads the files again: connections made after it
  use the new certificate, open ones keep theirs, and a bad file keeps the
  old certificate and says why.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    TLSVersion,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from txvnc.core.pem import pem_blocks
from txvnc.service.endpoints import parse_endpoint

#: The oldest protocol version a client may use.
MINIMUM_TLS = TLSVersion.TLSv1_2


class TLSConfigError(ValueError):
    """
    A certificate or key file that cannot be used, with the reason.
    """


def parse_ssl_description(description: str) -> dict[str, str]:
    """
    The parts of an C{ssl:} endpoint string: port, interface, backlog,
    privateKey, certKey, extraCertChain.
    """
    endpoint = parse_endpoint(description)
    if endpoint.kind != "ssl":
        raise ValueError(f"not an ssl: endpoint: {description!r}")
    parts = dict(endpoint.kwargs)
    if endpoint.port is not None:
        parts["port"] = endpoint.port
    if "port" not in parts or "privateKey" not in parts:
        raise TLSConfigError(
            f"{description!r}: an ssl: listener needs a port and privateKey="
        )
    parts.setdefault("certKey", parts["privateKey"])
    return parts


def load_options(
    key_path: str, cert_path: str, chain_path: str | None
) -> CertificateOptions:
    """
    L{CertificateOptions} from PEM files, checked by building a context.

    @raise TLSConfigError: when a file is missing or does not hold what it
        should (the message names the file).
    """
    try:
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key_pem = f.read()
        chain: list[Any] = []
        if chain_path:
            with open(chain_path, "rb") as f:
                chain_pem = f.read()
            chain = [
                Certificate.loadPEM(block).original for block in pem_blocks(chain_pem)
            ]
        private = PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
        options = CertificateOptions(
            privateKey=private.privateKey.original,
            certificate=private.original,
            extraCertChain=chain or None,
            raiseMinimumTo=MINIMUM_TLS,
        )
        options.getContext()
    except OSError as e:
        raise TLSConfigError(f"{e.filename}: {e.strerror}") from None
    except Exception as e:  # OpenSSL, Twisted and ValueError all speak here
        raise TLSConfigError(
            f"{cert_path} / {key_path}: not a matching PEM certificate and key ({e})"
        ) from None
    return options


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableTLS:
    """
    Server TLS connections from certificate files that L{reload} reads again.
    """

    _log = Logger()

    def __init__(
        self, key_path: str, cert_path: str, chain_path: str | None = None
    ) -> None:
        self.key_path = key_path
        self.cert_path = cert_path
        self.chain_path = chain_path
        self._options = load_options(key_path, cert_path, chain_path)

    def reload(self) -> None:
        """
        Read the files again; on error keep the current certificate.

        @raise TLSConfigError: when the new files cannot be used.
        """
        self._options = load_options(self.key_path, self.cert_path, self.chain_path)
        self._log.info("TLS certificate reloaded from {cert}", cert=self.cert_path)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._options.getContext(), None)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    A TCP endpoint whose connections are wrapped in TLS from C{tls}.
    """

    def __init__(self, tcp: IStreamServerEndpoint, tls: ReloadableTLS) -> None:
        self._tcp = tcp
        self.tls = tls

    def listen(self, protocolFactory: IProtocolFactory) -> Any:
        d: Any = self._tcp.listen(TLSMemoryBIOFactory(self.tls, False, protocolFactory))
        return d


def server_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    The endpoint for a listener description: ours for C{ssl:}, Twisted's
    for everything else.

    @raise TLSConfigError: for an C{ssl:} listener whose files are unusable.
    """
    if not description.startswith("ssl:"):
        return serverFromString(reactor, description)
    parts = parse_ssl_description(description)
    tls = ReloadableTLS(
        parts["privateKey"], parts["certKey"], parts.get("extraCertChain")
    )
    tcp = TCP4ServerEndpoint(
        reactor,
        int(parts["port"]),
        backlog=int(parts.get("backlog", "50")),
        interface=parts.get("interface", ""),
    )
    return TLSServerEndpoint(tcp, tls)
