"""
The browser's RFB messages after the handshake (RFC 6143 section 7.5 and
the common extensions), parsed one by one so the token's policy can drop
input and sanity limits can stop oversized messages.

Messages that pass are forwarded byte for byte, except SetEncodings, which
loses the encodings the console's policy cannot allow (see
L{txvnc.rfb.server_messages}).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from txvnc.rfb.errors import LimitExceeded, ProtocolViolation
from txvnc.rfb.machine import Steps
from txvnc.rfb.policy import ConsolePolicy
from txvnc.rfb.stream import Copy, Emit, Skip, StreamFilter

SET_PIXEL_FORMAT = 0
SET_ENCODINGS = 2
FRAMEBUFFER_UPDATE_REQUEST = 3
KEY_EVENT = 4
POINTER_EVENT = 5
CLIENT_CUT_TEXT = 6
ENABLE_CONTINUOUS_UPDATES = 150
CLIENT_FENCE = 248
XVP = 250
SET_DESKTOP_SIZE = 251
QEMU = 255

#: The extended clipboard pseudo-encoding: ClientCutText and ServerCutText
#: with a negative length carry a richer clipboard protocol.
EXTENDED_CLIPBOARD = -1063131698

#: Encodings the server-side parser can frame (L{txvnc.rfb.server_messages}).
RAW, COPY_RECT, RRE, HEXTILE, ZRLE = 0, 1, 2, 5, 16
DESKTOP_SIZE = -223
LAST_RECT = -224
CURSOR = -239
QEMU_POINTER_MOTION = -257
QEMU_EXTENDED_KEY = -258
QEMU_LED_STATE = -261
DESKTOP_NAME = -307
EXTENDED_DESKTOP_SIZE = -308
FENCE = -312
CONTINUOUS_UPDATES = -313
FRAMEABLE = frozenset(
    {
        RAW,
        COPY_RECT,
        RRE,
        HEXTILE,
        ZRLE,
        DESKTOP_SIZE,
        LAST_RECT,
        CURSOR,
        QEMU_POINTER_MOTION,
        QEMU_EXTENDED_KEY,
        QEMU_LED_STATE,
        DESKTOP_NAME,
        EXTENDED_DESKTOP_SIZE,
        FENCE,
        CONTINUOUS_UPDATES,
    }
)


def _is_hint(encoding: int) -> bool:
    # Compression and quality levels: hints with no data of their own.
    return -256 <= encoding <= -247 or -32 <= encoding <= -23


@dataclass(frozen=True)
class Limits:
    """
    The largest messages the browser may send.
    """

    max_cut_text: int = 1024 * 1024
    max_encodings: int = 256


@dataclass
class StreamState:
    """
    What both directions' parsers must agree on: the size of a pixel, which
    the server's ServerInit sets and the browser's SetPixelFormat changes.

    @ivar updates_asked: whether the browser has sent anything that makes
        the server send FramebufferUpdates (a request, continuous updates,
        or SetEncodings, after which qemu sends cursor shapes unasked).
        From then on an update may be on its way in the current pixel size,
        however far the socket buffers keep the proxy behind the server.
    """

    bytes_per_pixel: int = 4
    updates_asked: bool = False
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, what: str) -> None:
        self.dropped[what] = self.dropped.get(what, 0) + 1


class ClientMessageFilter(StreamFilter):
    """
    Feed it the browser's bytes after the handshake; L{receive} returns what
    may go to the VNC server, or raises L{LimitExceeded} or
    L{ProtocolViolation}.

    @param frame_server: whether the server's stream is being parsed (the
        clipboard may not flow from the VM), so SetEncodings is cut down to
        the encodings that parser can frame.
    """

    def __init__(
        self,
        policy: ConsolePolicy,
        state: StreamState,
        limits: Limits = Limits(),
        frame_server: bool = False,
    ) -> None:
        self.policy = policy
        self.state = state
        self.limits = limits
        self.frame_server = frame_server
        super().__init__(self._steps())

    def _keep_encoding(self, encoding: int) -> bool:
        policy = self.policy
        if encoding == EXTENDED_CLIPBOARD:
            return policy.clipboard_to_vm and policy.clipboard_from_vm
        if self.frame_server:
            return encoding in FRAMEABLE or _is_hint(encoding)
        return True

    def _pixel_size(self, size: int) -> None:
        """
        Take the browser's new pixel size, or refuse it when the server's
        stream is framed and updates may already be on their way: the server
        writes those in the size it had when it started each one, and the
        proxy, behind it by whatever the sockets hold, cannot tell where the
        new size begins. Reading pixels in the wrong size would turn them
        into message headers, and a later ServerCutText could pass. noVNC
        sets its pixel format once, before asking for anything.
        """
        state = self.state
        if size != state.bytes_per_pixel and self.frame_server and state.updates_asked:
            raise ProtocolViolation(
                "the browser changed the pixel size after asking for updates"
            )
        state.bytes_per_pixel = size

    def _steps(self) -> Steps:
        view_only = self.policy.view_only
        state = self.state
        while True:
            kind = (yield 1)[0]
            if kind == SET_PIXEL_FORMAT:
                body = yield 19
                bits = body[3]
                if bits not in (8, 16, 32):
                    raise ProtocolViolation(
                        f"the browser asked for {bits} bits per pixel"
                    )
                self._pixel_size(bits // 8)
                yield Emit(bytes([kind]) + body)
            elif kind == SET_ENCODINGS:
                state.updates_asked = True
                head = yield 3
                (count,) = struct.unpack("!H", head[1:3])
                if count > self.limits.max_encodings:
                    raise LimitExceeded(
                        f"SetEncodings with {count} encodings "
                        f"(limit {self.limits.max_encodings})"
                    )
                raw = yield 4 * count
                wanted = struct.unpack(f"!{count}i", raw)
                kept = [e for e in wanted if self._keep_encoding(e)]
                yield Emit(
                    struct.pack(f"!BxH{len(kept)}i", kind, len(kept), *kept)
                )
            elif kind == FRAMEBUFFER_UPDATE_REQUEST:
                state.updates_asked = True
                yield Emit(bytes([kind]) + (yield 9))
            elif kind in (KEY_EVENT, POINTER_EVENT):
                body = yield (7 if kind == KEY_EVENT else 5)
                if view_only:
                    state.drop("key" if kind == KEY_EVENT else "pointer")
                else:
                    yield Emit(bytes([kind]) + body)
            elif kind == CLIENT_CUT_TEXT:
                head = yield 7
                (length,) = struct.unpack("!i", head[3:7])
                size = abs(length)
                if size > self.limits.max_cut_text:
                    raise LimitExceeded(
                        f"clipboard text of {size} bytes "
                        f"(limit {self.limits.max_cut_text})"
                    )
                extended_ok = self._keep_encoding(EXTENDED_CLIPBOARD)
                if self.policy.clipboard_to_vm and (length >= 0 or extended_ok):
                    yield Emit(bytes([kind]) + head)
                    yield Copy(size)
                else:
                    state.drop("clipboard")
                    yield Skip(size)
            elif kind == ENABLE_CONTINUOUS_UPDATES:
                state.updates_asked = True
                yield Emit(bytes([kind]) + (yield 9))
            elif kind == CLIENT_FENCE:
                head = yield 8
                if head[7] > 64:
                    raise ProtocolViolation("the browser sent a fence over 64 bytes")
                payload = (yield head[7]) if head[7] else b""
                yield Emit(bytes([kind]) + head + payload)
            elif kind == XVP:
                body = yield 3
                if view_only:
                    state.drop("power")
                else:
                    yield Emit(bytes([kind]) + body)
            elif kind == SET_DESKTOP_SIZE:
                head = yield 7
                screens = (yield 16 * head[5]) if head[5] else b""
                if view_only:
                    state.drop("resize")
                else:
                    yield Emit(bytes([kind]) + head + screens)
            elif kind == QEMU:
                sub = (yield 1)[0]
                if sub == 0:  # extended key event
                    body = yield 10
                    if view_only:
                        state.drop("key")
                    else:
                        yield Emit(bytes([kind, sub]) + body)
                elif sub == 1:  # audio
                    op = yield 2
                    rest = (yield 6) if op == b"\x00\x02" else b""
                    yield Emit(bytes([kind, sub]) + op + rest)
                else:
                    raise ProtocolViolation(
                        f"the browser sent an unknown QEMU message {sub}"
                    )
            else:
                raise ProtocolViolation(
                    f"the browser sent an unknown RFB message (type {kind})"
                )
