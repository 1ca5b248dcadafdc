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

from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IRequest

from txvnc.consoleauth.tokens import token_ref

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
