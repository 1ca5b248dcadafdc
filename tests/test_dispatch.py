"""
The reactor's dispatch of relay events (L{txvnc.ops.dispatch}): a relay
transport's read runs without Twisted's legacy log context, everything else
with it, errors are still logged and close the connection, and the service
gives the reactor back as it found it.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python import context, log

from txvnc.ops.dispatch import DispatchService, install, uninstall
from txvnc.proxy.fastpath import tune


class Noting(Protocol):
    """Keeps what it reads and the legacy log context it read it in."""

    def __init__(self, fail: bool = False) -> None:
        self.data = b""
        self.systems: list[object] = []
        self.lost = False
        self.fail = fail

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.systems.append(context.get(log.ILogContext)["system"])
        if self.fail:
            raise RuntimeError("relay bug")

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


@pytest.fixture
def reactor():
    r = EPollReactor()
    yield r
    r._poller.close()


def connection(reactor: EPollReactor, protocol: Noting, relay: bool):
    """A real TCP transport on one end of a loopback TCP connection, reading."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        b = socket.create_connection(server.getsockname())
        a, _ = server.accept()
    a.setblocking(False)
    conn = tcp.Connection(a, protocol, reactor)
    conn.connected = 1
    protocol.makeConnection(conn)
    if relay:
        tune(conn)
    conn.startReading()
    return conn, b


def test_relay_reads_skip_the_log_context_others_keep_it(reactor):
    """A tuned (relay) transport reads without callWithLogger's context; an untuned one with it."""
    assert install(reactor)
    relay, relay_peer = connection(reactor, relay_protocol := Noting(), relay=True)
    other, other_peer = connection(reactor, other_protocol := Noting(), relay=False)
    relay_peer.send(b"to relay")
    other_peer.send(b"to other")
    reactor.doIteration(1)
    assert relay_protocol.data == b"to relay"
    assert other_protocol.data == b"to other"
    assert relay_protocol.systems == ["-"]  # the default context
    assert other_protocol.systems == [other.logPrefix()]
    for s in (relay.socket, relay_peer, other.socket, other_peer):
        s.close()


def test_an_error_in_a_relay_read_is_logged_and_closes_it(reactor):
    """What a relay read raises is logged by the reactor and the connection is closed, as with Twisted's dispatch."""
    install(reactor)
    errors: list[dict] = []
    log.addObserver(errors.append)
    try:
        _, peer = connection(reactor, protocol := Noting(fail=True), relay=True)
        peer.send(b"boom")
        reactor.doIteration(1)
    finally:
        log.removeObserver(errors.append)
    assert protocol.lost
    assert any(
        e.get("isError") and "relay bug" in str(e.get("failure")) for e in errors
    )
    peer.close()


def test_a_relay_whose_peer_hangs_up_is_closed(reactor):
    """A relay transport whose peer closes reads the end of the stream and loses its connection, as with Twisted's dispatch."""
    install(reactor)
    conn, peer = connection(reactor, protocol := Noting(), relay=True)
    peer.send(b"last words")
    peer.close()
    for _ in range(3):
        reactor.doIteration(0.1)
    assert protocol.data == b"last words"
    assert protocol.lost
    assert conn.fileno() == -1


def test_install_once_and_uninstall(reactor):
    """Installed once on an epoll reactor, given back by uninstall; other reactors are left alone."""
    assert install(reactor)
    assert not install(reactor)
    assert reactor.doIteration.lean
    uninstall(reactor)
    assert "doIteration" not in vars(reactor)
    assert reactor.doIteration.__func__ is EPollReactor.doPoll
    assert not install(MemoryReactorClock())


def test_dispatch_service_installs_while_running(reactor):
    """The service installs on start and uninstalls on stop."""
    service = DispatchService(reactor)
    service.startService()
    assert reactor.doIteration.lean
    service.stopService()
    assert "doIteration" not in vars(reactor)


class BadEnd(Noting):
    """A protocol whose connectionLost raises (a bug in it)."""

    def connectionLost(self, reason: object = None) -> None:
        super().connectionLost(reason)
        raise RuntimeError("connectionLost bug")


def test_an_error_in_closing_a_relay_is_logged_and_the_batch_goes_on(reactor):
    """
    What closing a relay connection raises (its protocol's connectionLost)
    is logged and the poll's other events are still handled in that
    iteration, as Twisted's callWithLogger does; it does not escape the
    reactor's doIteration, which would drop the rest of the batch.
    """
    install(reactor)
    errors: list[dict] = []
    log.addObserver(errors.append)
    try:
        _, peer_a = connection(reactor, bad := BadEnd(fail=True), relay=True)
        _, peer_b = connection(reactor, good := Noting(), relay=True)
        peer_a.send(b"boom")
        peer_b.send(b"fine")
        peer_a.close()
        peer_b.close()
        for _ in range(2):
            reactor.doIteration(0.1)
            if good.data:
                break
    finally:
        log.removeObserver(errors.append)
    assert bad.lost and good.data == b"fine"
    assert any(
        e.get("isError") and "connectionLost bug" in str(e.get("failure"))
        for e in errors
    )
