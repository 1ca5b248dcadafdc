"""
Parsing the browser's and the server's messages after the handshake, and
the policy they enforce.
"""

from __future__ import annotations

import struct

import pytest

from txvnc.rfb.client_messages import (
    EXTENDED_CLIPBOARD,
    ClientMessageFilter,
    Limits,
    StreamState,
)
from txvnc.rfb.errors import LimitExceeded, ProtocolViolation
from txvnc.rfb.policy import ConsolePolicy
from txvnc.rfb.server_messages import ServerMessageFilter

KEY = struct.pack("!BBxxI", 4, 1, 0x61)
POINTER = struct.pack("!BBHH", 5, 1, 10, 20)
UPDATE_REQUEST = struct.pack("!BBHHHH", 3, 1, 0, 0, 640, 480)
QEMU_KEY = struct.pack("!BBHII", 255, 0, 1, 0x61, 30)
XVP_REBOOT = bytes([250, 0, 1, 3])
PIXEL_FORMAT = bytes([0, 0, 0, 0, 16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0])


def cut(text: bytes, kind: int = 6) -> bytes:
    return struct.pack("!BxxxI", kind, len(text)) + text


def encodings(*values: int) -> bytes:
    return struct.pack(f"!BxH{len(values)}i", 2, len(values), *values)


def client(policy: ConsolePolicy | None = None, **kw: object) -> ClientMessageFilter:
    return ClientMessageFilter(policy or ConsolePolicy(), StreamState(), **kw)  # type: ignore[arg-type]


def test_everything_passes_untouched_by_default() -> None:
    """With the default policy every message is forwarded byte for byte."""
    stream = (
        PIXEL_FORMAT + encodings(0, 1, 16, -223) + UPDATE_REQUEST + KEY + POINTER
        + cut(b"hello") + QEMU_KEY + XVP_REBOOT
    )
    assert client().receive(stream) == stream


def test_split_anywhere_gives_the_same_bytes() -> None:
    """Messages split across reads are forwarded whole, in order."""
    stream = KEY + cut(b"x" * 1000) + POINTER + UPDATE_REQUEST
    f = client()
    out = b"".join(f.receive(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert out == stream


def test_view_only_drops_input_and_keeps_updates() -> None:
    """View-only drops keys, pointer, clipboard, QEMU keys and xvp, nothing else."""
    state = StreamState()
    f = ClientMessageFilter(ConsolePolicy(view_only=True), state)
    out = f.receive(KEY + UPDATE_REQUEST + POINTER + cut(b"paste") + QEMU_KEY + XVP_REBOOT)
    assert out == UPDATE_REQUEST
    assert state.dropped == {"key": 2, "pointer": 1, "clipboard": 1, "power": 1}


@pytest.mark.parametrize("mode,passes", [("both", True), ("to_vm", True), ("from_vm", False), ("none", False)])
def test_clipboard_to_vm(mode: str, passes: bool) -> None:
    """ClientCutText reaches the VM only when the clipboard may flow to it."""
    out = client(ConsolePolicy(clipboard=mode)).receive(cut(b"secret") + KEY)
    assert out == (cut(b"secret") + KEY if passes else KEY)


def test_extended_clipboard_is_removed_unless_both_ways() -> None:
    """The extended clipboard pseudo-encoding survives only with clipboard both."""
    ask = encodings(0, EXTENDED_CLIPBOARD)
    assert client().receive(ask) == ask
    assert client(ConsolePolicy(clipboard="from_vm")).receive(ask) == encodings(0)


def test_framing_the_server_narrows_encodings() -> None:
    """When the server's stream is parsed, only encodings it can frame are asked for."""
    out = client(frame_server=True).receive(encodings(7, 16, 5, -260, -223, -250, 21))
    assert out == encodings(16, 5, -223, -250)


def test_oversized_clipboard_is_refused() -> None:
    """ClientCutText over the limit stops the console before its text is read."""
    f = client(limits=Limits(max_cut_text=10))
    with pytest.raises(LimitExceeded, match="11 bytes"):
        f.receive(struct.pack("!BxxxI", 6, 11))


def test_negative_length_counts_its_size() -> None:
    """An extended-clipboard length is limited by its magnitude too."""
    f = client(limits=Limits(max_cut_text=10))
    with pytest.raises(LimitExceeded):
        f.receive(struct.pack("!Bxxxi", 6, -(2**31)))


def test_too_many_encodings_is_refused() -> None:
    """SetEncodings with more entries than the limit stops the console."""
    with pytest.raises(LimitExceeded, match="SetEncodings"):
        client(limits=Limits(max_encodings=4)).receive(encodings(*range(5)))


def test_unknown_message_type_is_refused() -> None:
    """A message type the proxy cannot frame is a protocol violation."""
    with pytest.raises(ProtocolViolation, match="type 99"):
        client().receive(b"\x63")


def test_set_pixel_format_sets_pixel_size() -> None:
    """SetPixelFormat's bits per pixel become the state both parsers use."""
    state = StreamState()
    ClientMessageFilter(ConsolePolicy(), state).receive(PIXEL_FORMAT)
    assert state.bytes_per_pixel == 2


def rect(x: int, y: int, w: int, h: int, enc: int) -> bytes:
    return struct.pack("!HHHHi", x, y, w, h, enc)


def test_server_cut_text_dropped_when_clipboard_stays_in_vm() -> None:
    """ServerCutText is removed from the server's stream; updates around it pass."""
    state = StreamState(bytes_per_pixel=4)
    f = ServerMessageFilter(ConsolePolicy(clipboard="to_vm"), state)
    update = b"\x00\x00" + struct.pack("!H", 2) + rect(0, 0, 2, 2, 0) + bytes(16) + rect(0, 0, 1, 1, 1) + b"\0\0\0\0"
    stream = update + cut(b"vm secret", kind=3) + b"\x02" + update
    out = b"".join(f.receive(stream[i : i + 5]) for i in range(0, len(stream), 5))
    assert out == update + b"\x02" + update
    assert state.dropped == {"clipboard from VM": 1}


def test_server_stream_framing_of_every_encoding() -> None:
    """RRE, Hextile, ZRLE, cursor and desktop-size rectangles are framed exactly."""
    state = StreamState(bytes_per_pixel=1)
    f = ServerMessageFilter(ConsolePolicy(clipboard="none"), state)
    rre = rect(0, 0, 4, 4, 2) + struct.pack("!I", 2) + b"\x07" + 2 * (b"\x01" + bytes(8))
    # Two hextile tiles: one raw (16x16), one with bg, fg and 2 plain subrects.
    hextile = rect(0, 0, 32, 16, 5) + b"\x01" + bytes(256) + b"\x0e\x01\x02\x02" + bytes(4)
    zrle = rect(0, 0, 8, 8, 16) + struct.pack("!I", 3) + b"zzz"
    cursor = rect(0, 0, 9, 2, -239) + bytes(9 * 2 + 2 * 2)
    extended = rect(0, 0, 8, 8, -308) + b"\x01\0\0\0" + bytes(16)
    update = b"\x00\x00" + struct.pack("!H", 5) + rre + hextile + zrle + cursor + extended
    stream = update + cut(b"x", kind=3) + update
    assert f.receive(stream) == update + update


def test_last_rect_ends_an_update() -> None:
    """A LastRect rectangle ends an update that announced 0xffff rectangles."""
    f = ServerMessageFilter(ConsolePolicy(clipboard="none"), StreamState())
    update = b"\x00\x00\xff\xff" + rect(0, 0, 0, 0, -224)
    assert f.receive(update + b"\x02") == update + b"\x02"


def test_server_encoding_we_did_not_ask_for() -> None:
    """A rectangle in an encoding the proxy cannot frame is a protocol violation."""
    f = ServerMessageFilter(ConsolePolicy(clipboard="none"), StreamState())
    with pytest.raises(ProtocolViolation, match="encoding 7"):
        f.receive(b"\x00\x00\x00\x01" + rect(0, 0, 1, 1, 7))
