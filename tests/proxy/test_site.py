"""
The proxy's HTTP side: the console page, noVNC's files, and nothing else.
"""

import io

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.test.requesthelper import DummyRequest

from txvnc.proxy.site import ConsoleSite

from .harness import Stack


@pytest.fixture
def stack():
    s = Stack()
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


async def get(stack, path):
    response = await treq.get(f"http://{stack.host}{path}", persistent=False)
    return response, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_console_page_is_served_uncached_without_referrer(stack):
    """vnc_auto.html loads noVNC, is never cached and never leaks its URL."""
    response, body = await get(stack, "/vnc_auto.html?token=abc")
    assert response.code == 200
    assert b'src="console.js"' in body
    headers = response.headers
    assert headers.getRawHeaders(b"cache-control") == [b"no-store"]
    assert headers.getRawHeaders(b"referrer-policy") == [b"no-referrer"]
    assert headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]


@pytest_twisted.ensureDeferred
async def test_novas_access_url_names_serve_the_page(stack):
    """
    nova's access URLs name noVNC's vnc_lite.html (with the token in
    ?path=%3Ftoken%3D...): txvnc's page answers there too, as it is.
    """
    _, page = await get(stack, "/vnc_auto.html")
    response, body = await get(stack, "/vnc_lite.html?path=%3Ftoken%3Dabc")
    assert response.code == 200 and body == page
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/html")
    assert response.headers.getRawHeaders(b"cache-control") == [b"no-store"]


@pytest_twisted.ensureDeferred
async def test_page_script_imports_novnc_from_the_package(stack):
    """console.js imports noVNC's RFB from /novnc/, which is served as JS."""
    response, body = await get(stack, "/console.js")
    assert response.code == 200
    assert b'from "./novnc/core/rfb.js"' in body
    response, body = await get(stack, "/novnc/core/rfb.js")
    assert response.code == 200
    assert b"export default class RFB" in body
    (content_type,) = response.headers.getRawHeaders(b"content-type")
    assert b"javascript" in content_type


@pytest.mark.parametrize(
    "path",
    [
        "/novnc/",
        "/novnc/core/",
        "/../../etc/passwd",
        "/novnc/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/novnc/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/novnc/core%2f..%2f..%2fpackage.json",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/nonexistent.html",
    ],
)
@pytest_twisted.ensureDeferred
async def test_no_listing_no_traversal(stack, path):
    """Directories are not listed and no path escapes the web root."""
    response, body = await get(stack, path)
    assert response.code == 404
    assert b"root:" not in body
    assert b"Directory listing" not in body


class RawHTTP(Protocol):
    """Sends one raw request and collects the answer until the close."""

    def __init__(self, request):
        self.request = request
        self.data = b""
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason=None):
        self.done.callback(self.data)


@pytest.mark.parametrize("path", ["//evil.example", "//evil.example/", "/novnc"])
@pytest_twisted.ensureDeferred
async def test_never_redirects_to_another_site(stack, path):
    """No path makes the proxy redirect the browser to another host."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", stack.port)
    raw = RawHTTP(
        f"GET {path} HTTP/1.1\r\nHost: {stack.host}\r\nConnection: close\r\n\r\n".encode()
    )
    await connectProtocol(endpoint, raw)
    answer = (await raw.done).decode("latin-1").lower()
    assert "evil.example" not in answer.split("\r\n\r\n")[0]
    for line in answer.split("\r\n"):
        if line.startswith("location:"):
            assert f"//{stack.host}/" in line or line.startswith("location: /")


def test_library_files_stay_out_of_the_access_log():
    """Successful noVNC module requests and health checks are not logged; pages and errors are."""
    # console_site passes the paths of its extra (health) resources.
    site = ConsoleSite(
        None,
        logFormatter=lambda when, request: request.path.decode(),
        quiet_paths=(b"/novnc/", b"/healthz", b"/readyz"),
    )
    site._logFile = io.StringIO()
    for path, code in [
        (b"/novnc/core/rfb.js", 200),
        (b"/novnc/core/missing.js", 404),
        (b"/healthz", 200),
        (b"/readyz", 200),
        (b"/readyz", 503),
        (b"/vnc_auto.html", 200),
    ]:
        request = DummyRequest([b""])
        request.path = path
        request.code = code
        site.log(request)
    assert site._logFile.getvalue().split() == [
        "/novnc/core/missing.js",
        "/readyz",
        "/vnc_auto.html",
    ]
