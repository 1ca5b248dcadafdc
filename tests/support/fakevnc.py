"""
A scriptable stand-in VNC server in this process, on a free loopback port:
it speaks no RFB, records each connection, hashes what arrives and streams
what a test asks, so relay tests compare bytes end to end and wait for
connections and byte counts as events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol


class StreamProducer:
    """
    Writes C{total} bytes of C{data} (cycled) to a transport as fast as the
    transport accepts them, hashing what it sent.
    """

    def __init__(self, transport, data: bytes, total: int, chunk: int = 65536):
        self.transport = transport
        self.data = memoryview(data)
        self.total = total
        self.chunk = chunk
        self.sent = 0
        self.sha = hashlib.sha256()
        self.done = Deferred()
        self.resumes = 0

    def resumeProducing(self) -> None:
        self.resumes += 1
        if self.sent >= self.total:
            return
        offset = self.sent % len(self.data)
        size = min(self.chunk, self.total - self.sent, len(self.data) - offset)
        piece = self.data[offset : offset + size]
        self.sha.update(piece)
        self.sent += size
        self.transport.write(piece.tobytes())
        if self.sent >= self.total:
            self.transport.unregisterProducer()
            self.done.callback(self.sha.hexdigest())

    def stopProducing(self) -> None:
        pass


class VNCSide(Protocol):
    """
    One connection to the fake VNC server: hashes what arrives, and streams
    when asked to.
    """

    def connectionMade(self) -> None:
        self.server = self.factory.server
        self.received = 0
        self.sha = hashlib.sha256()
        self.lost = Deferred()
        self.server.connections.append(self)
        if self.server._connected:
            self.server._connected.pop(0).callback(self)
        if self.server.on_connect is not None:
            self.server.on_connect(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.sha.update(data)
        for waiter in list(self.server._received_waiters):
            count, d = waiter
            if self.received >= count:
                self.server._received_waiters.remove(waiter)
                d.callback(self)

    def stream(self, data: bytes, total: int) -> StreamProducer:
        producer = StreamProducer(self.transport, data, total)
        self.transport.registerProducer(producer, False)
        return producer

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(None)


class FakeVNCServer:
    """
    A TCP server (or, given C{unix_path}, a unix socket server) that records
    connections; C{on_connect} scripts each one.
    """

    def __init__(
        self,
        on_connect: Callable[[VNCSide], None] | None = None,
        unix_path: str | None = None,
    ):
        self.on_connect = on_connect
        self.connections: list[VNCSide] = []
        self._connected: list[Deferred] = []
        self._received_waiters: list = []
        factory = Factory.forProtocol(VNCSide)
        factory.server = self
        factory.noisy = False
        if unix_path is not None:
            self.port = reactor.listenUNIX(unix_path, factory)
        else:
            self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.address = self.port.getHost()

    def next_connection(self) -> Deferred:
        d = Deferred()
        self._connected.append(d)
        return d

    def received_at_least(self, count: int) -> Deferred:
        d = Deferred()
        self._received_waiters.append((count, d))
        for conn in self.connections:
            if conn.received >= count:
                self._received_waiters.remove((count, d))
                d.callback(conn)
                break
        return d

    def stop(self) -> Deferred:
        for conn in self.connections:
            conn.transport.abortConnection()
        return self.port.stopListening()
