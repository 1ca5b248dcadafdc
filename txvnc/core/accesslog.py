"""
Keeping tokens out of logs.

Twisted's access log writes each request's URI and Referer, and console
URIs carry tokens (C{?token=}, noVNC's C{path=%3Ftoken%3D}, the API's
C{/v1/tokens/T}). Every site txvnc runs logs through L{access_log_formatter},
which swaps each token for the same short hash the proxy's own log lines use,
so a console can still be followed from line to line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python.components import proxyForInterface
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IRequest

from txvnc.core.forwarded import Network, request_client
from txvnc.core.tokens import token_ref

_TOKEN_PATTERNS = [
    # token=T, and its percent-encoded form inside noVNC's path parameter.
    re.compile(r"(?i)(token(?:=|%3D))([^&\s\"%;#]+)"),
    # /v1/tokens/T in the token API's paths.
    re.compile(r"(/v1/tokens/)([^/?\s\"#]+)"),
]


def _replace(match: re.Match[str]) -> str:
    return match.group(1) + "~" + token_ref(match.group(2))


def redact(text: str) -> str:
    """
    C{text} with every token it carries replaced by C{~<12-hex hash>}.
    """
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(_replace, text)
    return text


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
