"""
Clickjacking: no page may frame the proxy's pages unless the operator names
it (C{--frame-ancestors}), over real HTTP.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.usage import UsageError

from txvnc.proxy.site import console_site, find_novnc, frame_ancestor
from txvnc.tap import Options

from .harness import Stack

#: Answers of every kind the proxy's site gives: the page, a library
#: module, a 404, the health check, and the token check.
PATHS = [
    ("GET", "/vnc_auto.html?token=abc"),
    ("GET", "/novnc/core/rfb.js"),
    ("GET", "/no-such-page.html"),
    ("POST", "/token-check"),
]


@pytest.fixture
def stack():
    s = Stack()
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


async def headers_of(port: int, method: str, path: str):
    response = await treq.request(
        method,
        f"http://127.0.0.1:{port}{path}",
        data=b"{}" if method == "POST" else None,
        headers={"Content-Type": "application/json"},
        persistent=False,
    )
    await treq.content(response)
    return response.headers


@pytest.mark.parametrize("method, path", PATHS)
@pytest_twisted.ensureDeferred
async def test_every_answer_denies_framing_by_default(stack, method, path):
    """By default every answer says no page may frame it, in CSP and X-Frame-Options."""
    headers = await headers_of(stack.port, method, path)
    assert headers.getRawHeaders(b"content-security-policy") == [
        b"frame-ancestors 'none'"
    ]
    assert headers.getRawHeaders(b"x-frame-options") == [b"DENY"]


@pytest.mark.parametrize("method, path", PATHS)
@pytest_twisted.ensureDeferred
async def test_named_origins_may_frame(stack, method, path):
    """With --frame-ancestors the CSP lists those origins and X-Frame-Options (which cannot name them) is left out."""
    site = console_site(
        stack.factory,
        novnc_dir=find_novnc(),
        frame_ancestors=("https://dash.example.com", "'self'"),
    )
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        headers = await headers_of(port.getHost().port, method, path)
    finally:
        await port.stopListening()
    assert headers.getRawHeaders(b"content-security-policy") == [
        b"frame-ancestors https://dash.example.com 'self'"
    ]
    assert headers.getRawHeaders(b"x-frame-options") is None


@pytest.mark.parametrize(
    "value, source",
    [
        ("https://dash.example.com", "https://dash.example.com"),
        ("https://dash.example.com/", "https://dash.example.com"),
        ("http://127.0.0.1:8443", "http://127.0.0.1:8443"),
        ("https://*.example.com", "https://*.example.com"),
        ("self", "'self'"),
        ("'self'", "'self'"),
    ],
)
def test_frame_ancestor_values(value, source):
    """An origin or 'self' becomes its CSP source."""
    assert frame_ancestor(value) == source


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "dash.example.com",
        "https://dash.example.com/path",
        "https://a.example; script-src *",
        "https://a.example https://b.example",
        "https://a.example,https://b.example",
        "javascript:alert(1)",
        "'none'",
    ],
)
def test_bad_frame_ancestors_are_usage_errors(tmp_path, monkeypatch, value):
    """Anything but an origin or 'self' (a list, a path, a header injection) is refused at start-up."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TXVNC_NOVNC_DIR", find_novnc() or "")
    with pytest.raises(UsageError, match="--frame-ancestors"):
        Options().parseOptions(["--frame-ancestors", value])


def test_frame_ancestors_repeat_and_come_from_config(tmp_path, monkeypatch):
    """--frame-ancestors repeats, and the TOML key frame-ancestors sets the same list."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TXVNC_NOVNC_DIR", find_novnc() or "")
    config = Options()
    config.parseOptions(
        ["--frame-ancestors", "https://a.example", "--frame-ancestors", "self"]
    )
    assert config.settings.frame_ancestors == ("https://a.example", "'self'")
    toml = tmp_path / "txvnc.toml"
    toml.write_text('frame-ancestors = ["https://dash.example.com"]\n')
    config = Options()
    config.parseOptions(["--config", str(toml)])
    assert config.settings.frame_ancestors == ("https://dash.example.com",)
    toml.write_text('frame-ancestors = ["https://a.example; x"]\n')
    with pytest.raises(UsageError, match="--frame-ancestors"):
        Options().parseOptions(["--config", str(toml)])
