"""
Where a browser puts its console token, in the order we look.

noVNC's pages and the pages of the clouds that embed them disagree on where
the token goes, so the proxy accepts all three forms nova-novncproxy accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

MAX_TOKEN_LENGTH = 256


def _first(values: Sequence[str] | None) -> str | None:
    if not values:
        return None
    value = values[0].strip()
    if not value or len(value) > MAX_TOKEN_LENGTH:
        return None
    return value


def token_from_path_param(path: str) -> str | None:
    """
    The token inside noVNC's C{path} parameter, which holds a relative URL
    such as C{?token=T} or C{websockify?token=T}.
    """
    query = urlsplit(path).query
    return _first(parse_qs(query).get("token"))


def token_from_cookie(cookie_header: str | None) -> str | None:
    """
    The C{token} cookie, read one C{name=value} part at a time as nova
    does: a malformed cookie before it (another site's, with a character
    L{SimpleCookie} refuses) must not hide it.
    """
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(part.strip())
        except CookieError:
            continue
        morsel = jar.get("token")
        if morsel is not None:
            return _first([morsel.value])
    return None


def extract_token(
    params: Mapping[str, Sequence[str]], cookie_header: str | None
) -> str | None:
    """
    The console token of a WebSocket request: C{?token=}, then a C{path}
    parameter holding C{?token=}, then a C{token} cookie; L{None} if none.

    @param params: the request's query parameters, each a list of values.
    """
    token = _first(params.get("token"))
    if token is None:
        path = _first(params.get("path"))
        if path is not None:
            token = token_from_path_param(path)
    if token is None:
        token = token_from_cookie(cookie_header)
    return token
