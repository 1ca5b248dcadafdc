"""
The clipboard policy against a real Xtigervnc and a browser that plays
tricks with SetPixelFormat: with C{clipboard: none} the proxy frames the
server's stream to drop ServerCutText, and a pixel size changed in the
middle of a FramebufferUpdate must not let it read pixels as headers (and
the VM's clipboard through).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.conftest import run
from tests.hostile.wsclient import OP_CLOSE, WSClient, _Stream, upgrade_request
from tests.support.twistd import Twistd
from tests.support.vncservers import TigerVNC, require, tigervnc

pytestmark = [pytest.mark.vnc_servers, pytest.mark.timeout(180)]

SECRET = b"vm clipboard secret"
#: A screen whose one 8-bit update (8.5 MB) is far more than the socket
#: buffers between the proxy and a browser that stopped reading.
GEOMETRY = (2000, 4250)
#: The browser's receive buffer: small, so the proxy stalls early.
RECEIVE_BUFFER = 32 * 1024


def pixel_format(bits: int) -> bytes:
    depth, maxes, shifts = {8: (8, (7, 7, 3), (0, 3, 6)), 32: (24, (255, 255, 255), (16, 8, 0))}[bits]
    return struct.pack("!BxxxBBBBHHHBBBxxx", 0, bits, depth, 0, 1, *maxes, *shifts)


@pytest.fixture
def xtigervnc(tmp_path: Path) -> Iterator[TigerVNC]:
    width, height = GEOMETRY
    with tigervnc(tmp_path, "-SecurityTypes", "None", "-geometry", f"{width}x{height}") as server:
        yield server


class RFBOverWS:
    """
    The RFB byte stream inside a WebSocket's binary messages.
    """

    def __init__(self, ws: WSClient) -> None:
        self.ws = ws
        self.buffer = bytearray()
        self.received = bytearray()
        self.close: tuple[int | None, str] | None = None

    async def _more(self) -> None:
        frame = await self.ws.read_frame()
        if frame.opcode == OP_CLOSE:
            self.close = (frame.close_code, frame.close_reason)
            raise EOFError(f"console closed: {self.close}")
        self.buffer += frame.payload
        self.received += frame.payload

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._more()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_to_close(self, stop_at: bytes) -> None:
        """
        Read until the console closes, or C{stop_at} has arrived, or
        nothing comes for a while (a proxy that lost its place waits for
        bytes that never come).
        """
        while self.close is None and stop_at not in self.received:
            try:
                await self._more()
            except (EOFError, TimeoutError):
                return

    def send(self, data: bytes) -> None:
        self.ws.send_frame(data)


async def connect_small_window(port: int, path: str) -> WSClient:
    """
    A WebSocket client whose socket has a small receive buffer, so that
    when it stops reading the proxy's writes back up at once.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    _, stream = await loop.create_connection(_Stream, sock=sock)
    client = WSClient(stream)
    client.send(upgrade_request(f"127.0.0.1:{port}", path))
    response = await client.read_response()
    assert response.status == 101, f"upgrade refused: {response}"
    return client


async def handshake(rfb: RFBOverWS) -> tuple[int, int]:
    assert await rfb.read(12) == b"RFB 003.008\n"
    rfb.send(b"RFB 003.008\n")
    offered = await rfb.read((await rfb.read(1))[0])
    assert offered == b"\x01"
    rfb.send(b"\x01")
    assert await rfb.read(4) == b"\0\0\0\0"
    rfb.send(b"\x01")
    head = await rfb.read(24)
    await rfb.read(struct.unpack("!I", head[20:24])[0])
    width, height = struct.unpack("!HH", head[:4])
    return width, height


def own_clipboard(display: str, text: bytes) -> subprocess.Popen[bytes]:
    """
    Put C{text} on the X display's clipboard with xclip, which exits once
    one reader (Xtigervnc, for its viewers) has taken it.
    """
    xclip = require(shutil.which("xclip"), "xclip")
    process = subprocess.Popen(
        [xclip, "-display", display, "-selection", "clipboard", "-loops", "1"],
        stdin=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(text)
    process.stdin.close()
    return process


def test_pixel_size_change_mid_update_keeps_the_vm_clipboard(
    txvnc: Twistd, xtigervnc: TigerVNC
) -> None:
    """A browser that stops reading in the middle of an 8-bit update, lets the VM's clipboard change, then asks for 32 bits gets its console closed with 4005, and no ServerCutText."""
    since = txvnc.log.mark()

    async def scenario() -> tuple[RFBOverWS, int]:
        token = await asyncio.to_thread(txvnc.mint, "127.0.0.1", xtigervnc.port, clipboard="none")
        ws = await connect_small_window(txvnc.proxy_port, f"/websockify?token={token}")
        rfb = RFBOverWS(ws)
        width, height = await handshake(rfb)
        assert (width, height) == GEOMETRY
        rfb.send(pixel_format(8) + struct.pack("!BxHi", 2, 1, 0))
        rfb.send(struct.pack("!BBHHHH", 3, 0, 0, 0, width, height))
        kind, count = struct.unpack("!BxH", await rfb.read(4))
        assert kind == 0 and count > 1
        await rfb.read(12)  # the first rectangle's header: the update flows
        ws.pause_reading()
        # Xtigervnc takes the new clipboard for its viewer: a ServerCutText
        # now waits behind the rest of the update.
        xclip = own_clipboard(xtigervnc.display, SECRET)
        try:
            await asyncio.to_thread(xclip.wait, 60)
        finally:
            if xclip.poll() is None:
                xclip.kill()
                xclip.wait()
        rfb.send(pixel_format(32))
        ws.resume_reading()
        await rfb.read_to_close(stop_at=SECRET)
        ws.close()
        return rfb, ws.local_port

    rfb, port = run(scenario())
    # The proxy was still inside the update when the browser asked for 32 bits.
    width, height = GEOMETRY
    assert len(rfb.received) < width * height
    leaked = SECRET in rfb.received
    assert not leaked, "the VM's clipboard reached the browser"
    assert rfb.close is not None and rfb.close[0] == 4005, rfb.close
    assert "pixel size" in rfb.close[1]
    reason = txvnc.close_reason(port, since)
    assert "pixel size" in reason
