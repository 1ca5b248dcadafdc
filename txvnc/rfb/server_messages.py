"""
The VNC server's RFB messages after the handshake, framed so ServerCutText
can be dropped when the token keeps the VM's clipboard from the browser.

Framing a FramebufferUpdate means knowing how long each encoding's data
is, so when this parser is in use the browser's SetEncodings is cut down
to L{txvnc.rfb.client_messages.FRAMEABLE} (Raw, CopyRect, RRE, Hextile,
ZRLE and the usual pseudo-encodings). Pixel data is passed on as it
arrives, never buffered whole.
"""

from __future__ import annotations

import struct

from txvnc.rfb.client_messages import (
    COPY_RECT,
    CURSOR,
    DESKTOP_NAME,
    DESKTOP_SIZE,
    EXTENDED_DESKTOP_SIZE,
    HEXTILE,
    LAST_RECT,
    QEMU_EXTENDED_KEY,
    QEMU_LED_STATE,
    QEMU_POINTER_MOTION,
    RAW,
    RRE,
    ZRLE,
    StreamState,
)
from txvnc.rfb.errors import ProtocolViolation
from txvnc.rfb.machine import Steps
from txvnc.rfb.policy import ConsolePolicy
from txvnc.rfb.protocol import read_u32
from txvnc.rfb.stream import Copy, Emit, Skip, StreamFilter

FRAMEBUFFER_UPDATE = 0
SET_COLOUR_MAP_ENTRIES = 1
BELL = 2
SERVER_CUT_TEXT = 3
END_OF_CONTINUOUS_UPDATES = 150
SERVER_FENCE = 248


class ServerMessageFilter(StreamFilter):
    """
    Feed it the VNC server's bytes after ServerInit; L{receive} returns
    what may go to the browser.
    """

    def __init__(self, policy: ConsolePolicy, state: StreamState) -> None:
        self.policy = policy
        self.state = state
        super().__init__(self._steps())

    def _steps(self) -> Steps:
        while True:
            kind = (yield 1)[0]
            if kind == FRAMEBUFFER_UPDATE:
                # A server finishes an update in the pixel size it started
                # it in; a change applies from the next one.
                bpp = self.state.bytes_per_pixel
                head = yield 3
                yield Emit(bytes([kind]) + head)
                (count,) = struct.unpack("!H", head[1:3])
                for _ in range(count):
                    rect = yield 12
                    yield Emit(rect)
                    _, _, width, height, encoding = struct.unpack("!HHHHi", rect)
                    if encoding == LAST_RECT:
                        break
                    yield from self._rectangle(width, height, encoding, bpp)
            elif kind == SET_COLOUR_MAP_ENTRIES:
                head = yield 5
                yield Emit(bytes([kind]) + head)
                yield Copy(6 * struct.unpack("!H", head[3:5])[0])
            elif kind in (BELL, END_OF_CONTINUOUS_UPDATES):
                yield Emit(bytes([kind]))
            elif kind == SERVER_CUT_TEXT:
                head = yield 7
                size = abs(struct.unpack("!i", head[3:7])[0])
                if self.policy.clipboard_from_vm:
                    yield Emit(bytes([kind]) + head)
                    yield Copy(size)
                else:
                    self.state.drop("clipboard from VM")
                    yield Skip(size)
            elif kind == SERVER_FENCE:
                head = yield 8
                yield Emit(bytes([kind]) + head)
                yield Copy(head[7])
            else:
                raise ProtocolViolation(
                    f"the VNC server sent an RFB message the proxy cannot frame "
                    f"(type {kind})"
                )

    def _rectangle(self, width: int, height: int, encoding: int, bpp: int) -> Steps:
        if encoding == RAW:
            yield Copy(width * height * bpp)
        elif encoding == COPY_RECT:
            yield Copy(4)
        elif encoding == RRE:
            head = yield 4 + bpp
            yield Emit(head)
            yield Copy(read_u32(head[:4]) * (bpp + 8))
        elif encoding == HEXTILE:
            yield from self._hextile(width, height, bpp)
        elif encoding == ZRLE:
            head = yield 4
            yield Emit(head)
            yield Copy(read_u32(head))
        elif encoding == CURSOR:
            yield Copy(width * height * bpp + (width + 7) // 8 * height)
        elif encoding == EXTENDED_DESKTOP_SIZE:
            head = yield 4
            yield Emit(head)
            yield Copy(16 * head[0])
        elif encoding == DESKTOP_NAME:
            head = yield 4
            yield Emit(head)
            yield Copy(read_u32(head))
        elif encoding == QEMU_LED_STATE:
            yield Copy(1)
        elif encoding in (DESKTOP_SIZE, QEMU_EXTENDED_KEY, QEMU_POINTER_MOTION):
            pass
        else:
            raise ProtocolViolation(
                f"the VNC server sent encoding {encoding}, which the proxy "
                "did not ask for"
            )

    def _hextile(self, width: int, height: int, bpp: int) -> Steps:
        for y in range(0, height, 16):
            tile_height = min(16, height - y)
            for x in range(0, width, 16):
                tile_width = min(16, width - x)
                sub = (yield 1)[0]
                yield Emit(bytes([sub]))
                if sub & 1:  # raw tile
                    yield Copy(tile_width * tile_height * bpp)
                    continue
                size = (bpp if sub & 2 else 0) + (bpp if sub & 4 else 0)
                if sub & 8:
                    head = yield size + 1
                    yield Emit(head)
                    per_rect = bpp + 2 if sub & 16 else 2
                    yield Copy(head[-1] * per_rect)
                elif size:
                    yield Copy(size)
