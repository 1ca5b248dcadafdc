"""
A minimal RFB viewer over the proxy's WebSocket, standing in for noVNC at
the protocol level: it must be offered security None only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from twisted.internet.defer import Deferred

from tests.support.browser import Browser


class RFBBrowser(Browser):
    """
    Keeps every byte received so a test can read the RFB stream in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.buffer += payload
        super().onMessage(payload, isBinary)

    async def read(self, size: int) -> bytes:
        """
        The next C{size} bytes; fails if the console closes first.
        """
        while len(self.buffer) < size:
            if self.closed.called:
                raise AssertionError(f"console closed: {self.closed.result}")
            waiting: Deferred[object] = Deferred()
            self._waiters.append((self.received + 1, waiting))
            await waiting
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def onClose(self, wasClean: bool, code, reason) -> None:
        super().onClose(wasClean, code, reason)
        # Wake readers: they see the close and fail instead of hanging.
        for _, waiting in self._waiters:
            if not waiting.called:
                waiting.callback(None)
        self._waiters.clear()

    def send(self, data: bytes) -> None:
        self.sendMessage(data, isBinary=True)


@dataclass
class ServerInit:
    width: int
    height: int
    bits_per_pixel: int
    name: str


async def handshake(browser: RFBBrowser, shared: bool = True) -> ServerInit:
    """
    RFB 3.8 as noVNC speaks it; asserts that only security None is offered.
    """
    assert await browser.read(12) == b"RFB 003.008\n"
    browser.send(b"RFB 003.008\n")
    count = (await browser.read(1))[0]
    offered = await browser.read(count)
    assert offered == b"\x01", f"the browser was offered security types {list(offered)}"
    browser.send(b"\x01")
    assert await browser.read(4) == b"\0\0\0\0"
    browser.send(bytes([1 if shared else 0]))
    head = await browser.read(24)
    width, height = struct.unpack("!HH", head[:4])
    name = await browser.read(struct.unpack("!I", head[20:24])[0])
    return ServerInit(width, height, head[4], name.decode())


async def first_update(browser: RFBBrowser, width: int, height: int) -> int:
    """
    Ask for a full update in Raw and read its header: the screen really
    flows. The number of rectangles announced.
    """
    browser.send(struct.pack("!BxHi", 2, 1, 0))
    browser.send(struct.pack("!BBHHHH", 3, 0, 0, 0, width, height))
    kind = (await browser.read(1))[0]
    assert kind == 0, f"expected a FramebufferUpdate, got message type {kind}"
    _, count = struct.unpack("!BH", await browser.read(3))
    return count
