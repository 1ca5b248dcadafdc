"""
The relay's hot path stays short: the txvnc functions one read runs
through, counted with a profiler hook (deterministic, unlike a timing on a
shared machine). Counts from before the protocol was split: 7 per VNC read,
12 per browser read of complete binary frames (4 of them here).
"""

from __future__ import annotations

import sys

import pytest_twisted

from .memory import MemoryProxy


def txvnc_calls(fn, data: bytes) -> list[str]:
    """The txvnc functions called while C{fn(data)} runs."""
    called: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and "/txvnc/" in frame.f_code.co_filename:
            called.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        fn(data)
    finally:
        sys.setprofile(None)
    return called


def masked_frame(payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + body


@pytest_twisted.ensureDeferred
async def test_a_read_takes_no_more_calls_than_before_the_split():
    """A VNC read reaches the browser's socket in 7 txvnc calls and a browser read of 4 key events reaches the VNC socket in 11 (12 before)."""
    proxy = MemoryProxy()
    browser = proxy.browser(f"token={await proxy.mint()}")
    assert browser.opened.called
    (console,) = proxy.factory.consoles
    vnc_side = console.relay.vnc_transport.protocol
    server_side = console.transport.protocol

    from_vnc = txvnc_calls(vnc_side.dataReceived, b"x" * 16384)
    assert len(from_vnc) <= 7, from_vnc

    key = masked_frame(bytes([4, 1, 0, 0, 0, 0, 0, 0x61]))
    from_browser = txvnc_calls(server_side.dataReceived, key * 4)
    assert len(from_browser) <= 11, from_browser
    assert console.bytes_to_vnc == 32
