"""
TLS client options that check a VNC server's certificate names its host,
and fail closed when the check cannot be made.

Twisted's L{twisted.internet.ssl.optionsForClientTLS} checks the name in
its OpenSSL verify callback, but treats only
C{service_identity.VerificationError} (a name that does not match) as a
failure: a certificate with no subjectAltName at all raises
C{service_identity.CertificateError} there, which Twisted logs ("while
verifying certificate") and then I{accepts}, returning OpenSSL's own chain
verdict. A VeNCrypt console to such a server went on with no host check.
L{HostCheckedTLS} keeps Twisted's connection set-up (trust root, client
certificate, SNI) and puts its own verify callback in place, which refuses
the handshake, with a reason fit for the user, on any error at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

from OpenSSL import SSL
from OpenSSL.crypto import X509
from service_identity.exceptions import CertificateError, VerificationError
from service_identity.hazmat import (
    DNS_ID,
    IPAddress_ID,
    ServiceID,
    verify_service_identity,
)
from service_identity.pyopenssl import extract_patterns
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot
    from twisted.protocols.tls import TLSMemoryBIOProtocol


class HostCheckFailed(Exception):
    """
    The VNC server's certificate chains to the CA but does not name the
    host the token names (or names no host at all).
    """


def _service_id(host: str) -> ServiceID:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return DNS_ID(host)
    return IPAddress_ID(host)


def host_check_error(cert: X509, host: str) -> str | None:
    """
    Why C{cert} does not do for C{host}, in words; L{None} when it names it.
    """
    try:
        verify_service_identity(extract_patterns(cert), [_service_id(host)], [])
    except CertificateError:
        return (
            "its certificate names no host (no subjectAltName) "
            f"to check against {host}"
        )
    except VerificationError as e:
        kinds = ", ".join(sorted({type(err).__name__ for err in e.errors}))
        return f"its certificate does not name {host} ({kinds})"
    return None


@implementer(IOpenSSLClientConnectionCreator)
class HostCheckedTLS:
    """
    Client TLS options for C{host}: the chain must lead to C{trust_root}
    and the leaf certificate's subjectAltName must name C{host}.
    """

    _log = Logger()

    def __init__(
        self,
        host: str,
        trust_root: IOpenSSLTrustRoot | ssl.Certificate | None,
        client_certificate: ssl.PrivateCertificate | None = None,
    ) -> None:
        self._host = host
        self._options = ssl.optionsForClientTLS(
            host, trustRoot=trust_root, clientCertificate=client_certificate
        )

    def clientConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        connection.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            self._verifier(tlsProtocol),
        )
        return connection

    def _verifier(
        self, tls_protocol: TLSMemoryBIOProtocol
    ) -> Callable[[SSL.Connection, X509, int, int, int], bool]:
        def verify(
            connection: SSL.Connection, cert: X509, err: int, depth: int, ok: int
        ) -> bool:
            if depth != 0 or not ok:
                # The chain is OpenSSL's to judge; a failed chain ends the
                # handshake with its own error ("certificate verify failed").
                return bool(ok)
            try:
                why = host_check_error(cert, self._host)
            except BaseException:
                # Anything raised inside OpenSSL's callback would be lost:
                # log it and refuse rather than let the console through.
                self._log.failure("checking the VNC server's certificate")
                why = f"its certificate could not be checked against {self._host}"
            if why is None:
                return True
            tls_protocol.failVerification(Failure(HostCheckFailed(why)))
            return False

        return verify
