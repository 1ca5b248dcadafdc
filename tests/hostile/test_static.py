"""
The static side of a real C{twistd txvnc}: no path reaches a file outside
the web root, and none redirects the browser to another site.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.hostile.conftest import run
from tests.support.twistd import Twistd

TRAVERSALS = [
    "/../../../../etc/passwd",
    "/novnc/../../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    "/novnc/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/novnc/..%2f..%2f..%2fpackage.json",
    "/novnc/core%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/..%5c..%5c..%5cetc%5cpasswd",
    "/novnc/..\\..\\..\\package.json",
    "/%252e%252e/%252e%252e/etc/passwd",
    "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/vnc_auto.html%00.png",
    "/novnc/core/rfb.js%00",
    "/etc/passwd",
    "//etc/passwd",
    "/txvnc-api.key",
    "/../txvnc-api.key",
    "/%2e%2e/txvnc-api.key",
    "/novnc/../../../txvnc-api.key",
    "/novnc/",
    "/novnc/core/",
    "/./././novnc/../../etc/passwd",
    "/~root/.bashrc",
    "/proc/self/environ",
    "/%2fetc%2fpasswd",
]

OFF_SITE = [
    "//evil.example",
    "//evil.example/",
    "//evil.example/%2e%2e",
    "//evil.example/%2F..",
    "/\\evil.example",
    "/\\/evil.example/",
    "/%5cevil.example",
    "/%2f%2fevil.example",
    "/novnc//evil.example/",
    "/novnc/%2f%2fevil.example",
    "///evil.example/",
    "http://evil.example/",
    "http://evil.example/novnc",
]


async def get(server: Twistd, path: str, host: str | None = None) -> bytes:
    host = host or f"127.0.0.1:{server.proxy_port}"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.proxy_port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_gets_404(txvnc: Twistd, path: str):
    """A path that tries to leave the web root, or name a directory, is 404 and shows nothing of what lies outside."""
    since = txvnc.log.mark()
    status, headers, body = split(run(get(txvnc, path)))
    assert status == "HTTP/1.1 404 Not Found"
    assert b"root:" not in body
    assert txvnc.api_key.encode() not in body
    assert b'"name"' not in body  # package.json
    assert "location" not in headers
    assert txvnc.loud_lines(since) == []


@pytest.mark.parametrize("path", OFF_SITE)
def test_no_redirect_to_another_site(txvnc: Twistd, path: str):
    """A path that looks like another site is 404 and never a redirect."""
    status, headers, _ = split(run(get(txvnc, path)))
    assert status == "HTTP/1.1 404 Not Found"
    assert "location" not in headers


def test_directory_redirect_stays_on_the_site(txvnc: Twistd):
    """The one redirect there is (/novnc to /novnc/) is a path on this site, even when the Host header names another."""
    for host in (f"127.0.0.1:{txvnc.proxy_port}", "evil.example"):
        status, headers, _ = split(run(get(txvnc, "/novnc", host)))
        assert status == "HTTP/1.1 302 Found"
        assert headers["location"] == "/novnc/"


def test_the_console_page_is_still_served(txvnc: Twistd):
    """After all that, the console page and noVNC load."""
    for path in ("/vnc_auto.html", "/novnc/core/rfb.js"):
        status, _, body = split(run(get(txvnc, path)))
        assert status == "HTTP/1.1 200 OK"
        assert body
