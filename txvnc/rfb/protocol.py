"""
RFB constants and the small pieces both handshakes share: version strings,
security type names, reason strings and the actions a handshake asks its
driver to perform.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from txvnc.rfb.errors import ProtocolViolation

NONE = 1
VNC_AUTH = 2
VENCRYPT = 19
VENCRYPT_X509_NONE = 260
VENCRYPT_X509_VNC = 261

SECURITY_NAMES = {
    0: "Invalid",
    NONE: "None",
    VNC_AUTH: "VNC Authentication",
    5: "RA2",
    6: "RA2ne",
    16: "Tight",
    17: "Ultra",
    18: "TLS",
    VENCRYPT: "VeNCrypt",
    20: "SASL",
    22: "XVP",
    30: "Apple Remote Desktop",
    113: "MSLogonII",
    129: "Unix Logon",
}

VENCRYPT_NAMES = {
    256: "Plain",
    257: "TLSNone",
    258: "TLSVnc",
    259: "TLSPlain",
    VENCRYPT_X509_NONE: "X509None",
    VENCRYPT_X509_VNC: "X509Vnc",
    262: "X509Plain",
    263: "TLSSASL",
    264: "X509SASL",
}

#: Longest reason string or desktop name we accept from a VNC server.
MAX_SERVER_STRING = 64 * 1024

_VERSION = re.compile(rb"RFB (\d{3})\.(\d{3})\n")


def security_name(number: int) -> str:
    return SECURITY_NAMES.get(number, f"type {number}")


def vencrypt_name(number: int) -> str:
    return VENCRYPT_NAMES.get(number, f"subtype {number}")


def parse_version(data: bytes, who: str) -> tuple[int, int]:
    """
    (major, minor) of a 12-byte ProtocolVersion message.

    @param who: "VNC server" or "browser", for the error message.
    @raise ProtocolViolation: when C{data} is no RFB version at all.
    """
    found = _VERSION.fullmatch(data)
    if found is None:
        raise ProtocolViolation(f"the {who} does not speak RFB (no version string)")
    return int(found.group(1)), int(found.group(2))


def version_bytes(minor: int) -> bytes:
    return b"RFB 003.%03d\n" % minor


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def read_u32(data: bytes) -> int:
    value: int = struct.unpack("!I", data)[0]
    return value


def printable(raw: bytes, limit: int = 200) -> str:
    """
    A server-supplied string made safe for a log line or a close reason.
    """
    text = raw.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text[:limit]


@dataclass(frozen=True)
class Send:
    """
    Write these bytes to the peer.
    """

    data: bytes


@dataclass(frozen=True)
class StartTLS:
    """
    Start TLS on the VNC connection now (VeNCrypt); the next bytes the
    handshake receives are from inside the TLS session.
    """


@dataclass(frozen=True)
class ServerReady:
    """
    The VNC server's handshake is complete.

    @ivar server_init: the server's ServerInit message, as received.
    @ivar version: the RFB version used with the server, e.g. "3.8".
    @ivar security: the security negotiated, e.g. "VeNCrypt X509Vnc".
    """

    server_init: bytes
    version: str
    security: str


@dataclass(frozen=True)
class BrowserReady:
    """
    The browser's handshake is complete: relay from here on.

    @ivar version: the RFB version the browser chose.
    """

    version: str
