"""
Real-socket pieces for proxy tests: the token API, the proxy, a scriptable
VNC server and a WebSocket "browser", all on 127.0.0.1 in this process.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.server import Site

from txvnc.client import ConsoleAuthClient, pooled_http_client
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.consoleauth.secretbox import SecretBox
from txvnc.core.targets import TargetPolicy
from txvnc.proxy.guard import AuthFailureGuard
from txvnc.proxy.security import RFBConfig
from txvnc.proxy.site import console_site, find_novnc
from txvnc.proxy.vnc import VNCConnector
from txvnc.proxy.websocket import ConsoleProxyFactory

KEY = "relay-test-key"


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
    A TCP server that records connections; C{on_connect} scripts each one.
    """

    def __init__(self, on_connect: Callable[[VNCSide], None] | None = None):
        self.on_connect = on_connect
        self.connections: list[VNCSide] = []
        self._connected: list[Deferred] = []
        self._received_waiters: list = []
        factory = Factory.forProtocol(VNCSide)
        factory.server = self
        factory.noisy = False
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


class Browser(WebSocketClientProtocol):
    """
    A WebSocket client standing in for noVNC: hashes binary messages, fires
    C{opened} and C{closed}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.sha = hashlib.sha256()
        self.opened: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.text_messages = 0
        self._waiters: list = []

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.text_messages += 1
        self.received += len(payload)
        self.sha.update(payload)
        for waiter in list(self._waiters):
            count, d = waiter
            if self.received >= count:
                self._waiters.remove(waiter)
                d.callback(self)

    def received_at_least(self, count: int) -> Deferred:
        d = Deferred()
        if self.received >= count:
            d.callback(self)
        else:
            self._waiters.append((count, d))
        return d

    def onClose(self, wasClean: bool, code, reason) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(reason))
        self.closed.callback((wasClean, code, reason))


class Stack:
    """
    Token API + proxy, listening on loopback; tear down with L{stop}.
    """

    def __init__(
        self,
        connect_timeout: float = 5.0,
        auth_timeout: float = 5.0,
        rfb: RFBConfig | None = None,
        allowed_unix_dirs: tuple[str, ...] = (),
        limits=None,
        events=None,
        proxy_policy: TargetPolicy | None = None,
        max_auth_failures: int = 20,
        follow_interval: float | None = None,
        clock=None,
        allowed_origins: tuple[str, ...] = (),
        trusted_proxies: tuple = (),
        connector=None,
        audit=None,
    ):
        self.store = MemoryTokenStore()
        # The fake VNC servers listen on any free port.
        api = ConsoleAuthResource(
            self.store,
            KEY,
            reactor,
            "http://proxy.test",
            secrets=SecretBox("harness secret key"),
            allowed_unix_dirs=allowed_unix_dirs,
            policy=TargetPolicy.allow_all(),
        )
        self.api_port = reactor.listenTCP(0, Site(api), interface="127.0.0.1")
        self.api_url = f"http://127.0.0.1:{self.api_port.getHost().port}"
        self.http = pooled_http_client(reactor)
        self.auth = ConsoleAuthClient(
            self.http, self.api_url, KEY, reactor, timeout=auth_timeout
        )
        self.factory = ConsoleProxyFactory(
            reactor,
            self.auth,
            connect_timeout=connect_timeout,
            rfb=rfb,
            allowed_unix_dirs=allowed_unix_dirs,
            limits=limits,
            events=events,
            target_policy=proxy_policy or TargetPolicy.allow_all(),
            guard=AuthFailureGuard(reactor, max_auth_failures),
            audit=audit,
            node="stack-proxy",
            clock=clock,
            allowed_origins=allowed_origins,
            trusted_proxies=trusted_proxies,
            revocation_interval=follow_interval,
            connector=connector,
        )
        self.follower = self.factory.follower
        if self.follower is not None:
            self.follower.startService()
        self.proxy_port = reactor.listenTCP(
            0, console_site(self.factory, novnc_dir=find_novnc()), interface="127.0.0.1"
        )
        self.port = self.proxy_port.getHost().port
        self.host = f"127.0.0.1:{self.port}"

    async def mint(
        self, vnc_port: int | None, ttl: int = 600, instance: str = "inst-1", **options
    ) -> str:
        """
        A token for 127.0.0.1:C{vnc_port} (or C{unix_path=...}) with any
        RFB C{options} (security, vnc_password, view_only, ...).
        """
        body = {"ttl": ttl, "instance_uuid": instance, **options}
        if vnc_port is not None:
            body.update(host="127.0.0.1", port=vnc_port)
        response = await treq.post(
            self.api_url + "/v1/tokens",
            json=body,
            headers={"Authorization": "Bearer " + KEY},
        )
        assert response.code == 201
        return (await response.json())["token"]

    async def open_browser(
        self,
        query: str,
        origin: str | None = "same",
        headers: dict | None = None,
        path: str = "/websockify",
        protocol: type[Browser] = Browser,
    ) -> Browser:
        url = f"ws://{self.host}{path}?{query}" if query else f"ws://{self.host}{path}"
        factory = WebSocketClientFactory(
            url,
            origin=f"http://{self.host}" if origin == "same" else origin,
            protocols=["binary"],
            headers=headers or {},
        )
        factory.protocol = protocol
        factory.noisy = False
        factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        return await endpoint.connect(factory)

    async def raw_upgrade(
        self, query: str, origin: str | None = "same", headers: dict | None = None
    ):
        """
        A WebSocket upgrade request sent with a plain HTTP client, to read
        the status and reason of a refused handshake.
        """
        request_headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            "Host": self.host,
            **(headers or {}),
        }
        if origin == "same":
            request_headers["Origin"] = f"http://{self.host}"
        elif origin is not None:
            request_headers["Origin"] = origin
        response = await treq.get(
            f"http://{self.host}/websockify?{query}",
            headers=request_headers,
            persistent=False,
        )
        await treq.content(response)
        return response.code, response.phrase.decode()

    async def stop(self) -> None:
        if self.follower is not None:
            await maybeDeferred(self.follower.stopService)
        for console in list(self.factory.consoles):
            console.transport.abortConnection()
        # stopListening answers None for a port a test already closed.
        await maybeDeferred(self.proxy_port.stopListening)
        await maybeDeferred(self.api_port.stopListening)
        await self.http._agent._pool.closeCachedConnections()


def random_block(size: int = 4 * 1024 * 1024 + 7) -> bytes:
    """
    Random bytes whose odd length keeps the stream's cycle out of step with
    every buffer size, so reordering or loss changes the hash.
    """
    return os.urandom(size)


class LogCapture:
    """
    Collects the log events emitted while it is entered; L{failures} names
    the exceptions logged with C{log.failure}.
    """

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc_info: object) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def failures(self, kind: type[BaseException]) -> list[str]:
        return [
            str(e["log_failure"].value)
            for e in self.events
            if "log_failure" in e and e["log_failure"].check(kind)
        ]

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


class Connector(VNCConnector):
    """
    A VNC connector that answers with C{connect(info, protocol)} instead of
    connecting: a Deferred that never fires, or one that fires at once.
    """

    def __init__(self, connect: Callable) -> None:
        super().__init__(reactor)
        self._connect = connect

    def connect(self, info, protocol):
        return self._connect(info, protocol)
