"""
L{txvnc.proxy.hostcheck} over real TLS on loopback: a server certificate of
the right CA is accepted when its subjectAltName names the host, and
refused, with a reason, when it names another host, names none at all, or
cannot be checked; Twisted's own check let the nameless one through.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure

from tests.rfb.pki import PKI, make_pki
from txvnc.proxy import hostcheck
from txvnc.proxy.hostcheck import HostCheckedTLS, HostCheckFailed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello")


class Client(Protocol):
    """Fires C{done} with the first bytes, or with the failure that ended it."""

    def __init__(self, done: Deferred[list[bytes | Failure]]) -> None:
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        if not self.done.called:
            self.done.callback([data])
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if not self.done.called:
            self.done.callback([reason])  # in a list: a Failure would errback


async def meet(
    cert: Path, key: Path, pki: PKI, host: str = "127.0.0.1"
) -> bytes | Failure:
    """Connect with L{HostCheckedTLS} for C{host} to a server showing C{cert}."""
    server_cert = ssl.PrivateCertificate.loadPEM(cert.read_bytes() + key.read_bytes())
    port = reactor.listenSSL(
        0, Factory.forProtocol(Greeter), server_cert.options(), interface="127.0.0.1"
    )
    done: Deferred[list[bytes | Failure]] = Deferred()
    factory = ClientFactory.forProtocol(lambda: Client(done))
    trust = ssl.Certificate.loadPEM(pki.ca_cert.read_bytes())
    reactor.connectSSL(
        "127.0.0.1", port.getHost().port, factory, HostCheckedTLS(host, trust)
    )
    try:
        return (await done)[0]
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_certificate_naming_the_host_is_accepted(pki: PKI) -> None:
    """The usual certificate (SANs localhost and 127.0.0.1) passes, by address and by name."""
    assert await meet(pki.server_cert, pki.server_key, pki) == b"hello"
    assert (
        await meet(pki.server_cert, pki.server_key, pki, host="localhost") == b"hello"
    )


@pytest_twisted.ensureDeferred
async def test_a_certificate_without_subject_alt_name_is_refused(pki: PKI) -> None:
    """No subjectAltName (common name 127.0.0.1): refused before any byte, saying why."""
    result = await meet(pki.bare_server_cert, pki.bare_server_key, pki)
    assert isinstance(result, Failure) and result.check(HostCheckFailed), result
    assert result.getErrorMessage() == (
        "its certificate names no host (no subjectAltName) to check against 127.0.0.1"
    )


@pytest_twisted.ensureDeferred
async def test_a_certificate_naming_another_host_is_refused(pki: PKI) -> None:
    """A certificate for compute-1.example is refused for 127.0.0.1, naming the mismatch."""
    result = await meet(pki.other_server_cert, pki.other_server_key, pki)
    assert isinstance(result, Failure) and result.check(HostCheckFailed), result
    assert result.getErrorMessage() == (
        "its certificate does not name 127.0.0.1 (IPAddressMismatch)"
    )


@pytest_twisted.ensureDeferred
async def test_a_check_that_fails_refuses(
    pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong inside the check refuses the certificate (fails closed)."""

    def broken(cert: object, host: str) -> str | None:
        raise RuntimeError("a bug in the check")

    monkeypatch.setattr(hostcheck, "host_check_error", broken)
    result = await meet(pki.server_cert, pki.server_key, pki)
    assert isinstance(result, Failure) and result.check(HostCheckFailed), result
    assert (
        result.getErrorMessage()
        == "its certificate could not be checked against 127.0.0.1"
    )
