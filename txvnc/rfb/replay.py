"""
A recorded console stream made playable without a VNC server.

A recording holds what the browser was sent, from the RFB handshake on.
Played back, noVNC answers the handshake as it did live, but nothing hears
it: a server that asked for VNC authentication would have noVNC ask for a
password, and the recorded challenge and result would not follow. So the
security part of the recorded handshake is replaced by the simplest one
noVNC accepts without a word from anyone (RFB 3.8, security None, success)
and the recorded ServerInit and everything after it follow unchanged.
"""

from __future__ import annotations

import struct

#: What the replay starts with instead of the recorded security handshake.
NONE_HANDSHAKE = b"RFB 003.008\n" + b"\x01\x01" + struct.pack("!I", 0)

_NONE = 1
_VNC_AUTH = 2
_CHALLENGE = 16
_VERSION = len(b"RFB 003.008\n")


class NotReplayable(ValueError):
    """
    The recorded handshake is one this module cannot see through (VeNCrypt
    or another security type that wraps the stream), or it is cut short.
    """


def server_init_offset(data: bytes) -> int:
    """
    Where the ServerInit starts in the recorded server stream C{data}
    (which must hold the whole handshake and the ServerInit).

    The security type the browser chose is not in the server's stream; of
    None and VNC authentication, the one after which a sound ServerInit
    follows is taken.

    @raise NotReplayable: naming why.
    """
    if len(data) < _VERSION or not data.startswith(b"RFB 003."):
        raise NotReplayable("the recording does not start with an RFB version")
    try:
        minor = int(data[8:11])
    except ValueError:
        raise NotReplayable("the recorded RFB version is not a number") from None
    pos = _VERSION
    if minor < 7:
        if len(data) < pos + 4:
            raise NotReplayable("the recorded handshake is cut short")
        (chosen,) = struct.unpack_from("!I", data, pos)
        pos += 4
        offered = [chosen]
    else:
        if len(data) < pos + 1:
            raise NotReplayable("the recorded handshake is cut short")
        count = data[pos]
        offered = list(data[pos + 1 : pos + 1 + count])
        pos += 1 + count
        if count == 0:
            raise NotReplayable("the recorded server refused the connection")
    for kind in (_NONE, _VNC_AUTH):
        if kind not in offered:
            continue
        at = pos
        if kind == _VNC_AUTH:
            at += _CHALLENGE
        if kind == _VNC_AUTH or minor >= 8:
            if data[at : at + 4] != b"\0\0\0\0":
                continue  # no success result here
            at += 4
        if _sound_server_init(data, at):
            return at
    names = ", ".join(str(k) for k in offered)
    raise NotReplayable(f"no ServerInit after security type(s) {names}")


def _sound_server_init(data: bytes, at: int) -> bool:
    if len(data) < at + 24:
        return False
    width, height, bpp, depth, _big, true_colour = struct.unpack_from(
        "!HHBBBB", data, at
    )
    (name_length,) = struct.unpack_from("!I", data, at + 20)
    return (
        width > 0
        and height > 0
        and bpp in (8, 16, 32)
        and 0 < depth <= 32
        and true_colour in (0, 1)
        and name_length < 65536
        and len(data) >= at + 24 + name_length
    )


#: How much of the recorded server stream may pass before the handshake
#: must have been seen through.
HANDSHAKE_LIMIT = 1024 * 1024


class HandshakeSwap:
    """
    The recorded server chunks, in order, with the handshake up to the
    ServerInit replaced by L{NONE_HANDSHAKE} (in the first chunk; chunks
    wholly inside the old handshake become empty), one chunk at a time, so
    a recording of any length is made replayable holding only its
    handshake: L{look} at chunks until it says the ServerInit was found (or
    L{finish} when there are no more), then L{replace} every chunk from the
    first.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._skip: int | None = None
        self._first = True

    def look(self, chunk: bytes) -> bool:
        """
        Take the next chunk into the handshake; whether the ServerInit is
        now found.

        @raise NotReplayable: past L{HANDSHAKE_LIMIT} bytes without it.
        """
        self._head += chunk
        try:
            self._skip = server_init_offset(bytes(self._head))
        except NotReplayable:
            if len(self._head) > HANDSHAKE_LIMIT:
                raise
            return False
        self._head = bytearray()
        return True

    def finish(self) -> None:
        """
        No more chunks to look at.

        @raise NotReplayable: when the ServerInit was not found.
        """
        if self._skip is None:
            self._skip = server_init_offset(bytes(self._head))
        self._head = bytearray()

    def replace(self, chunk: bytes) -> bytes:
        """The next chunk as the replay sends it."""
        assert self._skip is not None, "look() until found, or finish(), first"
        if self._skip >= len(chunk):
            self._skip -= len(chunk)
            return b""
        rest = chunk[self._skip :]
        self._skip = 0
        if self._first:
            self._first = False
            rest = NONE_HANDSHAKE + rest
        return rest


def replayable(chunks: list[bytes]) -> list[bytes]:
    """
    The recorded server chunks, in order and as many, made replayable (see
    L{HandshakeSwap}).

    @raise NotReplayable: when the handshake cannot be read.
    """
    swap = HandshakeSwap()
    for chunk in chunks:
        if swap.look(chunk):
            break
    else:
        swap.finish()
    return [swap.replace(chunk) for chunk in chunks]
