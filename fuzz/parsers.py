"""
One fuzz target for every parser that reads what a stranger sends: token
extraction (query, noVNC's path parameter, cookie), origin matching, the
token API's request validation (JSON decoding included) and log redaction.

L{check} holds the properties and needs nothing but txvnc; C{make fuzz}
runs it under atheris (coverage-guided, for a fixed time), and the test
suite runs it under hypothesis so the target never rots.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import unquote

from txvnc.consoleauth.tokens import InvalidRequest, parse_token_request
from txvnc.core.accesslog import redact
from txvnc.proxy.origin import origin_allowed
from txvnc.proxy.tokens import MAX_TOKEN_LENGTH, extract_token

URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class Input:
    """
    Slices fuzzer bytes into the pieces a target needs (like atheris's
    FuzzedDataProvider, but usable without atheris).
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        if self._at >= len(self._data):
            return 0
        self._at += 1
        return self._data[self._at - 1]

    def text(self) -> str:
        n = self.byte()
        chunk = self._data[self._at : self._at + n]
        self._at += n
        return chunk.decode("utf-8", "replace")

    def rest(self) -> bytes:
        return self._data[self._at :]


def check(data: bytes) -> None:
    """
    Feed C{data} to one parser (chosen by its first byte) and assert the
    parser's promises; any other exception is a finding.
    """
    source = Input(data)
    kind = source.byte() % 4
    if kind == 0:
        params: dict[str, list[str]] = {}
        for _ in range(source.byte() % 4):
            params.setdefault(source.text(), []).append(source.text())
        token = extract_token(params, source.text() or None)
        if token is not None:
            assert 0 < len(token) <= MAX_TOKEN_LENGTH
            assert token == token.strip()
    elif kind == 1:
        allowed = [source.text() for _ in range(source.byte() % 3)]
        origin, host = source.text(), source.text()
        result = origin_allowed(origin or None, host or None, allowed)
        assert isinstance(result, bool)
        if origin.strip().lower() == "null" and "*" not in [a.strip() for a in allowed]:
            assert result is False
    elif kind == 2:
        try:
            body = json.loads(source.rest())
        except (ValueError, UnicodeDecodeError, RecursionError):
            return
        try:
            wanted = parse_token_request(body)
        except InvalidRequest:
            return
        assert isinstance(body, dict)
        assert wanted.host == body["host"] and wanted.port == body["port"]
        assert 1 <= wanted.port <= 65535
    else:
        # A token in a logged URI never survives redaction, in whatever form
        # the line carries it, nor can it be read back by decoding the line.
        before, after = source.text(), source.text()
        token = "".join(URLSAFE[b % len(URLSAFE)] for b in source.rest()[:64])
        every = "".join(f"%{b:02X}" for b in token.encode())
        form = source.byte() % len(TOKEN_FORMS)
        line = TOKEN_FORMS[form].format(before=before, after=after, t=token, e=every)
        redacted = redact(line)
        if len(token) >= 8 and not any(token in v for v in views(before + after)):
            for view in views(redacted):
                assert token not in view, (line, redacted)


#: Where a token travels in a logged line: C{{t}} the token, C{{e}} the
#: token with every byte percent-encoded.
TOKEN_FORMS = [
    "{before}?token={t}&{after}",
    "{before}?path=%3Ftoken%3D{t}&{after}",
    "{before}?path=websockify%253Ftoken%253D{t}&{after}",
    "{before}?token={e}&{after}",
    "{before}/v1/tokens/{t} {after}",
    "{before}/v1/tokens/{t}/use {after}",
    "{before}/v1%2Ftokens%2F{t} {after}",
    "{before} Cookie: other=1; token={t} {after}",
    '{before} "http://h/vnc_auto.html?token={t}" {after}',
]


def views(text: str) -> set[str]:
    """C{text} as written and percent-decoded once and twice."""
    once = unquote(text)
    return {text, once, unquote(once)}


def main() -> None:
    import atheris  # type: ignore[import-not-found]

    atheris.instrument_all()
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
