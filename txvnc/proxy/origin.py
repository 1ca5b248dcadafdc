"""
Cross-site WebSocket hijacking defence (CVE-2015-0259 in nova): a page from
another site must not be able to open a console with a user's cookie or a
leaked token, so the browser's C{Origin} must be our own host or one the
operator allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _split_origin(origin: str) -> tuple[str, str, int] | None:
    """
    (scheme, host, port) of a serialized origin, or L{None} when it is not
    one (C{null}, a path, junk).
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _split_host_header(host: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit("//" + host.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else default_port


def origin_allowed(
    origin: str | None, host_header: str | None, allowed: Iterable[str] = ()
) -> bool:
    """
    Whether a WebSocket handshake's C{Origin} may open a console.

    Allowed when there is no C{Origin} (not a browser, so no ambient
    credentials to abuse), when its host and port are those of the C{Host}
    header, or when it matches an entry of C{allowed}: a full origin
    (C{https://cloud.example.com}) matches that origin exactly, a bare host
    name (C{cloud.example.com}) matches it on any scheme and port, and C{*}
    matches every http, https, ws or wss origin. C{null} and other opaque
    origins are refused whatever C{allowed} holds.
    """
    if origin is None:
        return True
    split = _split_origin(origin)
    if split is None:
        return False
    scheme, host, port = split
    if host_header:
        own = _split_host_header(host_header, _DEFAULT_PORTS[scheme])
        if own == (host, port):
            return True
    for entry in allowed:
        entry = entry.strip().lower()
        if entry == "*":
            return True
        if "://" in entry:
            if _split_origin(entry) == split:
                return True
        elif entry == host:
            return True
    return False
