"""
The handshake with the VNC server, driven byte by byte without sockets.
"""

from __future__ import annotations

import struct

import pytest

from txvnc.rfb.errors import ProtocolViolation, SecurityNegotiationFailed
from txvnc.rfb.policy import SecuritySettings
from txvnc.rfb.protocol import Send, ServerReady, StartTLS
from txvnc.rfb.server import VNCServerHandshake
from txvnc.rfb.vncauth import vnc_auth_response

CHALLENGE = bytes(range(100, 116))
SERVER_INIT = struct.pack("!HH16sI", 640, 480, b"\x20\x18\0\1" + bytes(12), 4) + b"demo"


def reason(text: bytes) -> bytes:
    return struct.pack("!I", len(text)) + text


def sent(actions: list[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def run(handshake: VNCServerHandshake, *chunks: bytes) -> list[object]:
    actions: list[object] = []
    for chunk in chunks:
        actions += handshake.receive(chunk)
    return actions


def test_none_on_3_8() -> None:
    """With security None the proxy picks type 1, reads the result and sends ClientInit."""
    hs = VNCServerHandshake(SecuritySettings("none"), shared=True)
    actions = run(hs, b"RFB 003.008\n", b"\x02\x01\x02", b"\0\0\0\0", SERVER_INIT)
    assert sent(actions) == b"RFB 003.008\n" + b"\x01" + b"\x01"
    assert actions[-1] == ServerReady(SERVER_INIT, "3.8", "None")


def test_vnc_auth_on_3_8_answers_the_challenge() -> None:
    """VNC Authentication sends the DES response of the token's password."""
    hs = VNCServerHandshake(SecuritySettings("vnc", b"s3cret"), shared=False)
    actions = run(hs, b"RFB 003.008\n", b"\x01\x02", CHALLENGE, b"\0\0\0\0", SERVER_INIT)
    assert sent(actions) == (
        b"RFB 003.008\n\x02" + vnc_auth_response(b"s3cret", CHALLENGE) + b"\x00"
    )
    assert actions[-1] == ServerReady(SERVER_INIT, "3.8", "VNC Authentication")


def test_bytes_may_arrive_one_at_a_time() -> None:
    """The handshake does not care how the network splits the server's bytes."""
    hs = VNCServerHandshake(SecuritySettings("vnc", b"pw"), shared=True)
    stream = b"RFB 003.008\n\x01\x02" + CHALLENGE + b"\0\0\0\0" + SERVER_INIT + b"extra"
    actions = run(hs, *[stream[i : i + 1] for i in range(len(stream))])
    assert isinstance(actions[-1], ServerReady)
    assert hs.leftover() == b"extra"


def test_version_3_3_server_chooses() -> None:
    """A 3.3 server names the type itself and sends no result for None."""
    hs = VNCServerHandshake(SecuritySettings("none"), shared=True)
    actions = run(hs, b"RFB 003.003\n", b"\0\0\0\1", SERVER_INIT)
    assert sent(actions) == b"RFB 003.003\n\x01"
    assert actions[-1] == ServerReady(SERVER_INIT, "3.3", "None")


def test_version_3_7_vnc_auth() -> None:
    """A 3.7 server lists types and sends a result without a reason."""
    hs = VNCServerHandshake(SecuritySettings("vnc", b"pw"), shared=True)
    actions = run(hs, b"RFB 003.007\n", b"\x01\x02", CHALLENGE, b"\0\0\0\0", SERVER_INIT)
    assert sent(actions).startswith(b"RFB 003.007\n\x02")
    assert actions[-1] == ServerReady(SERVER_INIT, "3.7", "VNC Authentication")


def test_unknown_later_version_is_spoken_as_3_8() -> None:
    """Apple's 3.889 is answered with 3.8, as RFC 6143 asks."""
    hs = VNCServerHandshake(SecuritySettings("none"), shared=True)
    assert sent(hs.receive(b"RFB 003.889\n")) == b"RFB 003.008\n"


def test_wrong_password_says_so_with_the_server_reason() -> None:
    """A failed SecurityResult closes with the server's own reason."""
    hs = VNCServerHandshake(SecuritySettings("vnc", b"bad"), shared=True)
    run(hs, b"RFB 003.008\n", b"\x01\x02", CHALLENGE)
    with pytest.raises(SecurityNegotiationFailed, match=r"^VNC authentication failed: Authentication failure$"):
        hs.receive(b"\0\0\0\1" + reason(b"Authentication failure"))


def test_wrong_password_on_3_3_has_no_reason() -> None:
    """A 3.3 server's failure still says authentication failed."""
    hs = VNCServerHandshake(SecuritySettings("vnc", b"bad"), shared=True)
    run(hs, b"RFB 003.003\n", b"\0\0\0\2", CHALLENGE)
    with pytest.raises(SecurityNegotiationFailed, match=r"^VNC authentication failed$"):
        hs.receive(b"\0\0\0\1")


def test_no_common_type_names_both_sides() -> None:
    """A server asking for a type the token does not allow is named in the error."""
    hs = VNCServerHandshake(SecuritySettings("none"), shared=True)
    hs.receive(b"RFB 003.008\n")
    with pytest.raises(
        SecurityNegotiationFailed,
        match=r"^VNC server requires security type VNC Authentication, allowed: None$",
    ):
        hs.receive(b"\x01\x02")


def test_server_refusal_reason_is_kept() -> None:
    """A server that lists no types gives its reason, which the error keeps."""
    hs = VNCServerHandshake(SecuritySettings("none"), shared=True)
    hs.receive(b"RFB 003.008\n")
    with pytest.raises(SecurityNegotiationFailed, match="Too many security failures"):
        hs.receive(b"\x00" + reason(b"Too many security failures"))


def test_vnc_auth_without_password_fails_clearly() -> None:
    """A server that asks for a password the token lacks is a clear failure."""
    hs = VNCServerHandshake(SecuritySettings("vnc", None), shared=True)
    run(hs, b"RFB 003.008\n", b"\x01\x02")
    with pytest.raises(SecurityNegotiationFailed, match="carries none"):
        hs.receive(CHALLENGE)


def test_not_rfb_at_all() -> None:
    """Something that is not a VNC server is a protocol violation."""
    hs = VNCServerHandshake(SecuritySettings("none"), shared=True)
    with pytest.raises(ProtocolViolation, match="does not speak RFB"):
        hs.receive(b"HTTP/1.1 200")


def test_vencrypt_x509vnc_starts_tls_then_authenticates() -> None:
    """VeNCrypt 0.2 with X509Vnc asks for TLS, then answers the challenge inside it."""
    hs = VNCServerHandshake(SecuritySettings("vencrypt", b"pw"), shared=True)
    actions = run(hs, b"RFB 003.008\n", b"\x02\x02\x13", b"\x00\x02", b"\x00")
    assert sent(actions) == b"RFB 003.008\n\x13\x00\x02"
    actions = hs.receive(b"\x02" + struct.pack("!II", 260, 261) + b"\x01")
    assert sent(actions) == struct.pack("!I", 261)
    assert actions[-1] == StartTLS()
    actions = run(hs, CHALLENGE, b"\0\0\0\0", SERVER_INIT)
    assert sent(actions) == vnc_auth_response(b"pw", CHALLENGE) + b"\x01"
    assert actions[-1] == ServerReady(SERVER_INIT, "3.8", "VeNCrypt X509Vnc")


def test_vencrypt_x509none_without_password() -> None:
    """Without a password only X509None is chosen, and no challenge is read."""
    hs = VNCServerHandshake(SecuritySettings("vencrypt"), shared=True)
    run(hs, b"RFB 003.008\n", b"\x01\x13", b"\x00\x02", b"\x00")
    actions = hs.receive(b"\x01" + struct.pack("!I", 260) + b"\x01")
    assert actions[-1] == StartTLS()
    actions = run(hs, b"\0\0\0\0", SERVER_INIT)
    assert actions[-1] == ServerReady(SERVER_INIT, "3.8", "VeNCrypt X509None")


def test_vencrypt_without_a_common_subtype() -> None:
    """A VeNCrypt server that only offers subtypes we refuse is named in the error."""
    hs = VNCServerHandshake(SecuritySettings("vencrypt"), shared=True)
    run(hs, b"RFB 003.008\n", b"\x01\x13", b"\x00\x02", b"\x00")
    with pytest.raises(
        SecurityNegotiationFailed,
        match="requires security type VeNCrypt X509Vnc, TLSPlain, allowed: X509None",
    ):
        hs.receive(b"\x02" + struct.pack("!II", 261, 259))


def test_old_vencrypt_is_refused() -> None:
    """VeNCrypt 0.1 is refused with the version in the message."""
    hs = VNCServerHandshake(SecuritySettings("vencrypt"), shared=True)
    run(hs, b"RFB 003.008\n", b"\x01\x13")
    with pytest.raises(SecurityNegotiationFailed, match=r"VeNCrypt 0\.1"):
        hs.receive(b"\x00\x01")


def test_password_never_in_repr() -> None:
    """The settings' repr hides the password."""
    assert "hunter2" not in repr(SecuritySettings("vnc", b"hunter2"))
