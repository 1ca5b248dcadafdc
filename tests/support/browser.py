"""
A WebSocket client standing in for noVNC in the browser, from this process:
L{Browser} hashes what arrives and fires when it opens and closes, and
L{connect_browser} points one at a console proxy, the one way every suite
does it.
"""

from __future__ import annotations

import hashlib

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint


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


async def connect_browser(
    port: int,
    query: str = "",
    *,
    host: str = "127.0.0.1",
    origin: str | None = "same",
    headers: dict | None = None,
    path: str = "/websockify",
    protocol: type[Browser] = Browser,
) -> Browser:
    """
    A browser connected to the console proxy at C{host:port}, asking for
    C{path?query}; its handshake is under way: await its C{opened} (which
    fails when the proxy refuses it) or its C{closed}.

    @param origin: the C{Origin} header: "same" for the proxy's own
        C{http://host:port}, L{None} for none (a client that is no browser).
    """
    address = f"{host}:{port}"
    url = f"ws://{address}{path}?{query}" if query else f"ws://{address}{path}"
    factory = WebSocketClientFactory(
        url,
        origin=f"http://{address}" if origin == "same" else origin,
        protocols=["binary"],
        headers=headers or {},
    )
    factory.protocol = protocol
    factory.noisy = False
    browser: Browser = await TCP4ClientEndpoint(reactor, host, port).connect(factory)
    return browser
