"""
Keeping tokens out of logs.

Twisted's access log writes each request's URI and Referer, and console
URIs carry tokens (C{?token=}, noVNC's C{path=%3Ftoken%3D}, the API's
C{/v1/tokens/T} and C{/v1/replays/T}), in whatever percent-encoding the
sender chose: the parsers decode names before they look (C{?%74oken=T}
opens a console).
Every site txvnc runs logs through L{access_log_formatter}, which swaps each
token for the same short hash the proxy's own log lines use, so a console
can still be followed from line to line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python.components import proxyForInterface
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IRequest

from txvnc.core.forwarded import Network, request_client
from txvnc.core.tokens import token_ref

#: A URL in a log line: what lies between spaces and quotes.
_WORD = re.compile(r'[^\s"]+')
#: What separates path segments, once decoded ("%2F" is a "/" to a router
#: that joins decoded segments, as klein does).
_SEGMENT_SEPARATOR = re.compile(r"(/|%(?:25)*2[fF])")
#: A token already redacted.
_REF = re.compile(r"~[0-9a-f]{12}")
#: API path segments whose next segment is a secret: a console's token
#: (C{/v1/tokens/T}) and a replay link's (C{/v1/replays/T}, which opens a
#: recording until it expires).
_SECRET_COLLECTIONS = frozenset({"tokens", "replays"})
#: How deep URLs nest inside parameters (noVNC's path= holds one).
_MAX_DEPTH = 4


def redact(text: str) -> str:
    """
    C{text} with every token it carries replaced by C{~<12-hex hash>}.

    Each URL in the text is read the way the parsers that act on it do:
    query names and values percent-decoded (Autobahn's and Twisted's
    C{parse_qs}, the page's C{URLSearchParams}), a value that holds a URL
    (noVNC's C{path=websockify?token=T}) read again as one, and API paths
    split into decoded segments (Twisted's C{postpath}). A query name
    containing C{token}, in any letter case and spelling, has its value
    replaced; so has the segment after a C{tokens} or C{replays} segment. The hash is of
    the token as the parser reads it, the one the proxy's own lines name.
    """
    return _WORD.sub(lambda word: _redact_url(word.group(0), 0), text)


def _decoded(text: str) -> str:
    """
    C{text} percent-decoded until it stops changing (a name spelled
    C{%2574oken} is still a token's name to a parser that decodes twice).
    """
    for _ in range(_MAX_DEPTH):
        plain = unquote_plus(text)
        if plain == text:
            break
        text = plain
    return text


def _ref(value: str) -> str:
    return "~" + token_ref(value.strip())


def _redact_url(url: str, depth: int) -> str:
    path, mark, query = url.partition("?")
    path = _redact_path(path, depth)
    if mark:
        return path + mark + _redact_query(query, depth)
    if "=" in path:
        return _redact_query(path, depth)  # a bare query, as in path=?token=T
    return path


def _redact_path(path: str, depth: int) -> str:
    parts = _SEGMENT_SEPARATOR.split(path)
    after_tokens = False
    # Even indexes are segments, odd ones the separators between them.
    for n in range(0, len(parts), 2):
        segment = parts[n]
        if not segment:
            continue  # empty segments collapse in some routers
        if after_tokens and not _REF.fullmatch(segment):
            parts[n] = _ref(unquote(segment))
        elif "%" in segment and depth < _MAX_DEPTH:
            parts[n] = _redact_nested(segment, depth, unquote)
        after_tokens = _decoded(segment).lower() in _SECRET_COLLECTIONS
    return "".join(parts)


def _redact_query(query: str, depth: int) -> str:
    fields = query.split("&")
    for n, field in enumerate(fields):
        name, equals, value = field.partition("=")
        if equals and "token" in _decoded(name).lower():
            if value and not _REF.fullmatch(value):
                fields[n] = name + equals + _ref(unquote_plus(value))
        elif depth < _MAX_DEPTH:
            # A value (or a bare field) may itself be a URL with a token.
            fields[n] = name + equals + _redact_nested(value, depth, unquote_plus)
            if not equals:
                fields[n] = _redact_nested(field, depth, unquote_plus)
    return "&".join(fields)


def _redact_nested(raw: str, depth: int, decode: Callable[[str], str]) -> str:
    """
    C{raw} decoded once and redacted as a URL of its own; re-encoded when
    that changed anything, else left as it was.
    """
    plain = decode(raw)
    redacted = _redact_url(plain, depth + 1)
    if redacted == plain:
        return raw
    if plain == raw:
        return redacted
    return quote(redacted, safe="/~")


def access_log_formatter(timestamp: str, request: IRequest) -> str:
    """
    Twisted's combined log format, with tokens redacted.
    """
    return redact(combinedLogFormatter(timestamp, request))


class _ResolvedClient(proxyForInterface(IRequest, "_request")):  # type: ignore[misc]
    """
    A request whose client address is the one C{--trusted-proxy} resolves
    from X-Forwarded-For (the first hop no trusted proxy added), for the
    access log; anything else is the request's own.
    """

    def __init__(self, request: IRequest, trusted: Sequence[Network]) -> None:
        super().__init__(request)
        self._trusted = trusted

    def getClientAddress(self) -> Any:
        peer = self._request.getClientAddress()
        resolved = request_client(self._request, self._trusted)
        if not isinstance(peer, (IPv4Address, IPv6Address)) or resolved == (
            f"{peer.host}:{peer.port}"
        ):
            return peer  # not a trusted proxy's request: the peer itself
        kind = IPv6Address if ":" in resolved else IPv4Address
        return kind("TCP", resolved, 0)

    # Not part of IRequest, but read by the formatter.
    @property
    def clientproto(self) -> bytes:
        return self._request.clientproto

    @property
    def code(self) -> int:
        return self._request.code

    @property
    def sentLength(self) -> int:
        return self._request.sentLength


def access_log_formatter_for(
    trusted: Sequence[Network],
) -> Callable[[str, IRequest], str]:
    """
    L{access_log_formatter}, naming the client as C{--trusted-proxy}
    resolves it, like the proxy's own log lines, the brute-force guard and
    the audit log do: behind a load balancer the peer is always the
    balancer.
    """
    if not trusted:
        return access_log_formatter

    def formatter(timestamp: str, request: IRequest) -> str:
        return access_log_formatter(timestamp, _ResolvedClient(request, trusted))

    return formatter
