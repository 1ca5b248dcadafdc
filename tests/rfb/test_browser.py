"""
The handshake with the browser: security None only, the server's ServerInit.
"""

from __future__ import annotations

import pytest

from txvnc.rfb.browser import BrowserHandshake
from txvnc.rfb.errors import ProtocolViolation
from txvnc.rfb.protocol import BrowserReady, Send

SERVER_INIT = b"S" * 24 + b"name"


def sent(actions: list[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def test_3_8_offers_none_and_passes_server_init() -> None:
    """A 3.8 browser is offered None only, told OK, then gets ServerInit."""
    hs = BrowserHandshake(SERVER_INIT)
    assert hs.greeting == b"RFB 003.008\n"
    assert sent(hs.receive(b"RFB 003.008\n")) == b"\x01\x01"
    assert sent(hs.receive(b"\x01")) == b"\0\0\0\0"
    actions = hs.receive(b"\x00")
    assert sent(actions) == SERVER_INIT
    assert actions[-1] == BrowserReady("3.8")


def test_3_3_browser_is_told_none() -> None:
    """A 3.3 browser is told the type (None) rather than offered a list."""
    hs = BrowserHandshake(SERVER_INIT)
    assert sent(hs.receive(b"RFB 003.003\n")) == b"\0\0\0\1"
    assert hs.receive(b"\x01")[-1] == BrowserReady("3.3")


def test_3_7_has_no_security_result_for_none() -> None:
    """A 3.7 browser gets no SecurityResult after choosing None."""
    hs = BrowserHandshake(SERVER_INIT)
    hs.receive(b"RFB 003.007\n")
    assert sent(hs.receive(b"\x01")) == b""
    assert sent(hs.receive(b"\x01")) == SERVER_INIT


def test_browser_choosing_another_type_is_refused() -> None:
    """A browser that picks VNC Authentication anyway is a protocol violation."""
    hs = BrowserHandshake(SERVER_INIT)
    hs.receive(b"RFB 003.008\n")
    with pytest.raises(ProtocolViolation, match="only None"):
        hs.receive(b"\x02")


def test_garbage_instead_of_a_version() -> None:
    """Bytes that are not an RFB version are refused."""
    with pytest.raises(ProtocolViolation, match="browser does not speak RFB"):
        BrowserHandshake(SERVER_INIT).receive(b"GET / HTTP/1.1\r\n")


def test_bytes_after_client_init_are_left_over() -> None:
    """Messages sent right after ClientInit wait in the leftover for the relay."""
    hs = BrowserHandshake(SERVER_INIT)
    hs.receive(b"RFB 003.008\n\x01\x01\x03\x00")
    assert hs.done
    assert hs.leftover() == b"\x03\x00"
