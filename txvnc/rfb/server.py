"""
The proxy's side of the RFB handshake with a VNC server (RFC 6143 sections
7.1 to 7.3), as a client: versions 3.3, 3.7 and 3.8; security types None,
VNC Authentication and VeNCrypt (X509None, X509Vnc); then ClientInit with
the shared flag the token's policy sets, and the server's ServerInit.
"""

from __future__ import annotations

import struct

from txvnc.rfb.errors import ProtocolViolation, SecurityNegotiationFailed
from txvnc.rfb.machine import ByteMachine, Steps
from txvnc.rfb.policy import SecuritySettings
from txvnc.rfb.protocol import (
    MAX_SERVER_STRING,
    NONE,
    VENCRYPT,
    VENCRYPT_X509_NONE,
    VENCRYPT_X509_VNC,
    VNC_AUTH,
    Send,
    ServerReady,
    StartTLS,
    parse_version,
    printable,
    read_u32,
    security_name,
    u32,
    vencrypt_name,
    version_bytes,
)
from txvnc.rfb.vncauth import CHALLENGE_SIZE, vnc_auth_response

SERVER_INIT_HEADER = 24


def allowed_types(settings: SecuritySettings) -> list[int]:
    """
    The security types a console may use with its VNC server, best first.
    """
    if settings.mode == "vnc":
        return [VNC_AUTH]
    if settings.mode == "vencrypt":
        return [VENCRYPT]
    return [NONE]


def allowed_subtypes(settings: SecuritySettings) -> list[int]:
    """
    The VeNCrypt subtypes a console may use, best first: X509Vnc needs a
    password; X509None is always acceptable, as the server chooses to ask
    for no password.
    """
    if settings.password is not None:
        return [VENCRYPT_X509_VNC, VENCRYPT_X509_NONE]
    return [VENCRYPT_X509_NONE]


def _names(numbers: list[int], name: object) -> str:
    return ", ".join(name(n) for n in numbers)  # type: ignore[operator]


class VNCServerHandshake(ByteMachine):
    """
    Feed it what the VNC server sends (L{receive}); it answers with
    L{Send}, L{StartTLS} and finally L{ServerReady} actions, or raises an
    L{txvnc.rfb.errors.RFBError} saying why the console cannot open.
    """

    def __init__(self, settings: SecuritySettings, shared: bool) -> None:
        self.settings = settings
        self.shared = shared
        super().__init__(self._steps())

    def _read_reason(self) -> Steps:
        size = read_u32((yield 4))
        if size > MAX_SERVER_STRING:
            raise ProtocolViolation("the VNC server sent an oversized reason string")
        raw = (yield size) if size else b""
        self._reason = printable(raw)

    def _steps(self) -> Steps:
        major, minor = parse_version((yield 12), "VNC server")
        if major != 3 or minor < 3:
            raise ProtocolViolation(
                f"the VNC server speaks RFB {major}.{minor}; txvnc speaks 3.3 to 3.8"
            )
        # RFC 6143 7.1.1: unknown versions below 3.8 mean 3.3; above, 3.8.
        minor = 8 if minor >= 8 else 7 if minor == 7 else 3
        yield Send(version_bytes(minor))

        if minor == 3:
            offered = [read_u32((yield 4))]
            if offered == [0]:
                yield from self._read_reason()
                raise SecurityNegotiationFailed(
                    f"VNC server refused the connection: {self._reason}"
                )
        else:
            count = (yield 1)[0]
            if count == 0:
                yield from self._read_reason()
                raise SecurityNegotiationFailed(
                    f"VNC server refused the connection: {self._reason}"
                )
            offered = list((yield count))

        allowed = allowed_types(self.settings)
        chosen = next((t for t in allowed if t in offered), None)
        if chosen is None:
            raise SecurityNegotiationFailed(
                f"VNC server requires security type {_names(offered, security_name)}"
                f", allowed: {_names(allowed, security_name)}"
            )
        if minor != 3:
            yield Send(bytes([chosen]))
        security = security_name(chosen)

        if chosen == VNC_AUTH:
            yield from self._vnc_auth()
        elif chosen == VENCRYPT:
            subtype = yield from self._vencrypt()
            security += " " + vencrypt_name(subtype)

        if minor == 8 or chosen != NONE:
            status = read_u32((yield 4))
            if status != 0:
                self._reason = ""
                if minor == 8:
                    yield from self._read_reason()
                what = (
                    "VNC authentication failed"
                    if self.settings.password is not None
                    else "VNC server refused the connection"
                )
                detail = f": {self._reason}" if self._reason else ""
                raise SecurityNegotiationFailed(f"{what}{detail}")

        yield Send(bytes([1 if self.shared else 0]))
        header = yield SERVER_INIT_HEADER
        name_length = read_u32(header[20:24])
        if name_length > MAX_SERVER_STRING:
            raise ProtocolViolation("the VNC server sent an oversized desktop name")
        name = (yield name_length) if name_length else b""
        yield ServerReady(header + name, f"3.{minor}", security)

    def _vnc_auth(self) -> Steps:
        challenge = yield CHALLENGE_SIZE
        password = self.settings.password
        if password is None:
            raise SecurityNegotiationFailed(
                "VNC server asks for a password and the token carries none"
            )
        yield Send(vnc_auth_response(password, challenge))

    def _vencrypt(self) -> Steps:
        major, minor = struct.unpack("!BB", (yield 2))
        if (major, minor) < (0, 2):
            raise SecurityNegotiationFailed(
                f"VNC server speaks VeNCrypt {major}.{minor}; txvnc needs 0.2"
            )
        yield Send(b"\x00\x02")
        if (yield 1)[0] != 0:
            raise SecurityNegotiationFailed("VNC server refused VeNCrypt 0.2")
        count = (yield 1)[0]
        if count == 0:
            raise SecurityNegotiationFailed("VNC server offers no VeNCrypt subtype")
        raw = yield 4 * count
        offered = [read_u32(raw[i : i + 4]) for i in range(0, len(raw), 4)]
        allowed = allowed_subtypes(self.settings)
        chosen = next((t for t in allowed if t in offered), None)
        if chosen is None:
            raise SecurityNegotiationFailed(
                "VNC server requires security type VeNCrypt "
                f"{_names(offered, vencrypt_name)}, allowed: "
                f"{_names(allowed, vencrypt_name)}"
            )
        yield Send(u32(chosen))
        if (yield 1)[0] != 1:
            raise SecurityNegotiationFailed(
                f"VNC server refused VeNCrypt {vencrypt_name(chosen)}"
            )
        yield StartTLS()
        if chosen == VENCRYPT_X509_VNC:
            yield from self._vnc_auth()
        return chosen
