"""
Tokens stay out of the access log however a URL spells them. The proxy
(through Autobahn's C{parse_qs}), the console page (C{URLSearchParams}) and
the token API (Twisted's path segments) all percent-decode names before they
look for a token, so C{?%74oken=T}, C{?tok%65n=T} and
C{?path=websockify%3F%2574oken%3DT} open consoles and C{/v1/%74okens/T} reads
one: redaction must find what those parsers find, not one spelling of it.
"""

from __future__ import annotations

import asyncio
import http.client
import secrets
from urllib.parse import parse_qs, quote, unquote, unquote_plus, urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.web.test.requesthelper import DummyRequest

from tests.hostile.conftest import Backend, Twistd, run
from tests.hostile.wsclient import WSClient
from txvnc.core.accesslog import access_log_formatter, redact
from txvnc.core.tokens import token_ref
from txvnc.proxy.tokens import extract_token

URLSAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
tokens = st.text(URLSAFE, min_size=20, max_size=64)
junk = st.text(URLSAFE + ".~", max_size=12)


def percent(char: str) -> str:
    return "%" + format(ord(char), "02X")


@st.composite
def spelled(draw: st.DrawFn, word: str) -> str:
    """
    C{word} with any of its letters percent-encoded, in either hex case.
    """
    out = []
    for char in word:
        if draw(st.booleans()):
            code = percent(char)
            out.append(code.lower() if draw(st.booleans()) else code)
        else:
            out.append(char)
    return "".join(out)


def decodings(text: str) -> list[str]:
    """
    C{text} and what repeated percent-decoding makes of it.
    """
    seen = [text]
    for _ in range(4):
        seen.append(unquote_plus(seen[-1]))
    return seen


def assert_gone(token: str, line: str) -> None:
    """
    Neither the token nor any percent-encoded spelling of it survives in
    the redacted line.
    """
    redacted = redact(line)
    for text in decodings(redacted):
        assert token not in text, (line, redacted)


def proxy_reads(uri: str) -> str | None:
    """
    The token the proxy takes from a WebSocket request to C{uri}.
    """
    return extract_token(parse_qs(urlsplit(uri).query), None)


@st.composite
def console_uris(draw: st.DrawFn, token: str) -> str:
    """
    A request URI the proxy (and the page) take C{token} from: in the query
    under a spelled name, or inside noVNC's C{path} parameter, itself
    encoded once more.
    """
    name = draw(spelled("token"))
    value = draw(spelled(token)) if draw(st.booleans()) else token
    before = draw(st.lists(st.tuples(junk, junk), max_size=2))
    after = draw(st.lists(st.tuples(junk, junk), max_size=2))
    extra = "".join(f"{k}x={v}&" for k, v in before)
    tail = "".join(f"&{k}y={v}" for k, v in after)
    if draw(st.booleans()):
        query = f"{extra}{name}={value}{tail}"
    else:
        inner = f"websockify?{name}={value}"
        query = f"{extra}path={quote(inner, safe='')}{tail}"
    page = draw(st.sampled_from(["/websockify", "/", "/vnc_auto.html", "/vnc_lite.html"]))
    return f"{page}?{query}"


@settings(max_examples=500, deadline=None)
@given(data=st.data(), token=tokens)
def test_what_the_proxy_reads_is_redacted(data: st.DataObject, token: str) -> None:
    """Any request URI the proxy takes a token from is logged without that token, in any spelling."""
    uri = data.draw(console_uris(token))
    assume(proxy_reads(uri) == token)
    assert_gone(token, f'"GET {uri} HTTP/1.1" 101 0 "-" "Chromium"')
    assert_gone(token, f'"GET /vnc_auto.html HTTP/1.1" 200 10 "http://p{uri}" "x"')


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    token=tokens,
    method=st.sampled_from(["GET", "DELETE", "POST"]),
    use=st.booleans(),
)
def test_what_the_api_reads_is_redacted(data: st.DataObject, token: str, method: str, use: bool) -> None:
    """An API path whose segments decode to /v1/tokens/T is logged without T, in any spelling."""
    version = data.draw(spelled("v1"))
    tokens_name = data.draw(spelled("tokens"))
    value = data.draw(spelled(token))
    path = f"/{version}/{tokens_name}/{value}" + ("/use" if use else "")
    # Twisted splits on "/" and decodes each segment.
    assert [unquote(s) for s in path.split("/")][1:4] == ["v1", "tokens", token]
    assert_gone(token, f'"{method} {path} HTTP/1.1" 200 10 "-" "treq"')


@pytest.mark.parametrize(
    "spelling",
    [
        "/websockify?%74oken={}",
        "/websockify?tok%65n={}",
        "/websockify?path=websockify%3F%2574oken%3D{}",
        "/vnc_auto.html?%74oken={}&notices=1",
        "/v1/%74okens/{}",
        "/v1/tokens/{}/use",
        "/v1/tokens%2F{}",
        "/v1/tokens/%7E{}",
    ],
)
def test_the_reported_spellings(spelling: str) -> None:
    """Each spelling the issue found, and API paths around it, are redacted to the hash of the token."""
    token = secrets.token_urlsafe(32)
    request = DummyRequest([b""])
    request.code = 200
    request.sentLength = 10
    request.clientproto = b"HTTP/1.1"
    request.uri = spelling.format(token).encode()
    request.requestHeaders.addRawHeader(b"referer", f"http://p{spelling.format(token)}".encode())
    line = access_log_formatter("[06/Dec/2026:10:00:00 +0000]", request)
    for text in decodings(line):
        assert token not in text, line


def test_hash_names_the_token_as_the_proxy_does() -> None:
    """The hash in the log is the one the proxy's own lines use for the token it read."""
    token = secrets.token_urlsafe(32)
    ref = "~" + token_ref(token)
    assert ref in redact(f"GET /websockify?%74oken={token} HTTP/1.1")
    assert ref in redact(f"GET /v1/%74okens/{token} HTTP/1.1")


def test_plain_lines_stay_as_they_are() -> None:
    """Requests without a token are logged exactly as before."""
    for line in [
        '"GET /novnc/core/rfb.js?v=1 HTTP/1.1" 200 1234 "-" "Chromium"',
        '"GET /v1/instances/0b1f/tokens HTTP/1.1" 200 2 "-" "-"',
        '"POST /v1/tokens HTTP/1.1" 201 268 "-" "-"',
        '"GET /websockify?notices=1&path=websockify HTTP/1.1" 403 0 "-" "-"',
    ]:
        assert redact(line) == line


def test_real_twistd_logs_no_spelled_token(txvnc: Twistd, backend: Backend) -> None:
    """Against twistd txvnc, the issue's spellings open consoles and read tokens, and its log holds none of those tokens."""
    since = txvnc.log.mark()
    minted = [txvnc.mint("127.0.0.1", backend.port) for _ in range(4)]
    paths = [
        f"/websockify?%74oken={minted[0]}",
        f"/websockify?tok%65n={minted[1]}",
        f"/websockify?path=websockify%3F%2574oken%3D{minted[2]}",
    ]

    async def browsers() -> list[int]:
        statuses = []
        for path in paths:
            client, response = await WSClient.connect("127.0.0.1", txvnc.proxy_port, path)
            statuses.append(response.status)
            client.close()
        # The upgrades are not access-logged; the page loads that read the
        # same spellings are, with the page's address as their Referer.
        for path in paths:
            page = path.replace("/websockify", "/vnc_auto.html")
            reader, writer = await asyncio.open_connection("127.0.0.1", txvnc.proxy_port)
            writer.write(
                f"GET {page} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Referer: http://x{page}\r\n\r\n".encode()
            )
            statuses.append(int((await reader.read()).split()[1]))
            writer.close()
        return statuses

    assert run(browsers()) == [101, 101, 101, 200, 200, 200]
    connection = http.client.HTTPConnection("127.0.0.1", txvnc.api_port, timeout=30)
    try:
        connection.request(
            "GET", f"/v1/%74okens/{minted[3]}", headers={"Authorization": f"Bearer {txvnc.api_key}"}
        )
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 200
    txvnc.log.wait_for(r'"GET /v1/\S+ HTTP/1\.1" 200', since)
    log = txvnc.log.text(since)
    assert [t for t in minted if t in log] == []
