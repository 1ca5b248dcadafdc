"""
SetPixelFormat while the VNC server's stream is framed (the clipboard may
not leave the VM): the size of a pixel decides where every rectangle of a
FramebufferUpdate ends, so the proxy must never read an update in a size the
server did not write it in. Otherwise pixels are read as message headers
and a later ServerCutText can pass.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txvnc.rfb.client_messages import ClientMessageFilter, StreamState
from txvnc.rfb.errors import ProtocolViolation, RFBError
from txvnc.rfb.policy import ConsolePolicy
from txvnc.rfb.server_messages import ServerMessageFilter

SECRET = b"vm secret"


def pixel_format(bits: int) -> bytes:
    depth = {8: 8, 16: 16, 32: 24}[bits]
    maxes = {8: (7, 7, 3), 16: (31, 63, 31), 32: (255, 255, 255)}[bits]
    shifts = {8: (0, 3, 6), 16: (11, 5, 0), 32: (16, 8, 0)}[bits]
    return struct.pack("!BxxxBBBBHHHBBBxxx", 0, bits, depth, 0, 1, *maxes, *shifts)


RAW_ONLY = struct.pack("!BxHi", 2, 1, 0)
UPDATE_REQUEST = struct.pack("!BBHHHH", 3, 0, 0, 0, 64, 64)
CONTINUOUS_UPDATES = struct.pack("!BBHHHH", 150, 1, 0, 0, 64, 64)


def raw_update(rects: int, width: int, height: int, bpp: int, fill: int = 0) -> bytes:
    """
    A FramebufferUpdate of C{rects} Raw rectangles written C{bpp} bytes a
    pixel, every byte C{fill}.
    """
    out = struct.pack("!BxH", 0, rects)
    for n in range(rects):
        out += struct.pack("!HHHHi", 0, n * height, width, height, 0)
        out += bytes([fill]) * (width * height * bpp)
    return out


def server_cut_text(text: bytes = SECRET) -> bytes:
    return struct.pack("!BxxxI", 3, len(text)) + text


def filters(mode: str = "none") -> tuple[ClientMessageFilter, ServerMessageFilter, StreamState]:
    """
    Both directions' filters over one state, as the proxy sets them up when
    the clipboard may not leave the VM (ServerInit said 32 bits a pixel).
    """
    policy = ConsolePolicy(clipboard=mode)
    state = StreamState(bytes_per_pixel=4)
    frame_server = not policy.clipboard_from_vm
    browser = ClientMessageFilter(policy, state, frame_server=frame_server)
    server = ServerMessageFilter(policy, state)
    return browser, server, state


@pytest.mark.parametrize("mode", ["none", "to_vm"])
def test_pixel_size_change_after_asking_for_updates_is_refused(mode: str) -> None:
    """Once the browser has asked for updates, a SetPixelFormat with another pixel size is refused while the server's stream is framed."""
    browser, _, _ = filters(mode)
    assert browser.receive(pixel_format(8) + RAW_ONLY + UPDATE_REQUEST)
    with pytest.raises(ProtocolViolation, match="pixel size"):
        browser.receive(pixel_format(32))


@pytest.mark.parametrize(
    "asking",
    [RAW_ONLY, UPDATE_REQUEST, CONTINUOUS_UPDATES],
    ids=["SetEncodings", "FramebufferUpdateRequest", "EnableContinuousUpdates"],
)
def test_any_request_that_makes_updates_flow_counts(asking: bytes) -> None:
    """SetEncodings (unasked cursor updates), FramebufferUpdateRequest and EnableContinuousUpdates each close the window for a size change."""
    browser, _, _ = filters()
    browser.receive(asking)
    with pytest.raises(ProtocolViolation, match="pixel size"):
        browser.receive(pixel_format(16))


def test_pixel_size_change_before_anything_is_asked_applies() -> None:
    """noVNC's order (SetPixelFormat, SetEncodings, FramebufferUpdateRequest) works: the next update is framed in the new size."""
    browser, server, state = filters()
    asked = pixel_format(8) + RAW_ONLY + UPDATE_REQUEST
    assert browser.receive(asked) == asked
    assert state.bytes_per_pixel == 1
    update = raw_update(2, 8, 8, 1, fill=3)
    assert server.receive(update + server_cut_text() + update) == update + update


def test_same_pixel_size_passes_at_any_time() -> None:
    """A SetPixelFormat that keeps the pixel size (other shifts, say) passes whenever it comes."""
    browser, _, state = filters()
    browser.receive(pixel_format(32) + RAW_ONLY + UPDATE_REQUEST)
    other = bytearray(pixel_format(32))
    other[14:17] = bytes([0, 8, 16])
    assert browser.receive(bytes(other)) == bytes(other)
    assert state.bytes_per_pixel == 4


@pytest.mark.parametrize("mode", ["both", "from_vm"])
def test_unframed_server_stream_takes_any_change(mode: str) -> None:
    """When the VM's clipboard may reach the browser the server's stream is not parsed, and SetPixelFormat passes as before."""
    browser, _, _ = filters(mode)
    browser.receive(RAW_ONLY + UPDATE_REQUEST)
    assert browser.receive(pixel_format(8)) == pixel_format(8)


def test_an_update_ends_in_the_size_it_started_in() -> None:
    """A pixel size that changes in the middle of a FramebufferUpdate applies from the next update: the rest of this one is framed in its own size."""
    _, server, state = filters()
    state.bytes_per_pixel = 1
    update = raw_update(3, 16, 4, 1, fill=0)
    head = update[: 4 + 12 + 10]
    out = server.receive(head)
    state.bytes_per_pixel = 4
    out += server.receive(update[len(head) :] + server_cut_text())
    assert out == update
    later = raw_update(1, 2, 2, 4, fill=9)
    assert server.receive(later) == later


def relay(chunks: list[bytes], change_at: int, new_bits: int) -> bytes:
    """
    The bypass as the proxy would meet it: noVNC-like start at 8 bits, a
    server stream delivered in C{chunks}, and the browser's SetPixelFormat
    arriving after chunk C{change_at}. What reaches the browser until the
    console closes.
    """
    browser, server, _ = filters()
    browser.receive(pixel_format(8) + RAW_ONLY + UPDATE_REQUEST)
    seen = b""
    try:
        for n, chunk in enumerate(chunks):
            if n == change_at:
                browser.receive(pixel_format(new_bits) + UPDATE_REQUEST)
            seen += server.receive(chunk)
    except RFBError:
        pass  # the console closes (4005): nothing more reaches the browser
    return seen


@settings(max_examples=300, deadline=None)
@given(
    rects=st.integers(2, 6),
    fill=st.integers(0, 255),
    new_bits=st.sampled_from([16, 32]),
    cuts=st.lists(st.integers(1, 4000), min_size=1, max_size=8),
    change_at=st.integers(0, 8),
)
def test_vm_clipboard_never_reaches_the_browser(
    rects: int, fill: int, new_bits: int, cuts: list[int], change_at: int
) -> None:
    """Wherever the pixel size change lands in the server's stream, the VM's clipboard text never reaches the browser."""
    stream = raw_update(rects, 20, 10, 1, fill) + server_cut_text()
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True) if b > a]
    assert SECRET not in relay(chunks, change_at, new_bits)


def test_the_reported_bypass_is_closed() -> None:
    """The issue's case: paused half way through an 8-bit update, the browser switches to 32 bits; the console closes and the clipboard stays in the VM."""
    stream = raw_update(4, 20, 10, 1) + server_cut_text()
    half = 4 + 12 + 100
    browser, server, _ = filters()
    browser.receive(pixel_format(8) + RAW_ONLY + UPDATE_REQUEST)
    seen = server.receive(stream[:half])
    with pytest.raises(ProtocolViolation):
        browser.receive(pixel_format(32))
    assert SECRET not in seen
