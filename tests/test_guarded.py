"""
The guarded HTTP channel: a deadline for headers, a limit on bodies.
"""

import io
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyRequest

from txvnc.client import ConsoleAuthClient, ConsoleAuthUnavailable
from txvnc.core.guarded import GuardedSite
from txvnc.service.api import API_POLLED_PATHS


class Hello(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return b"hello"


def connect(timeout=10.0, max_body=0):
    reactor = MemoryReactorClock()
    site = GuardedSite(
        Hello(), reactor=reactor, header_timeout=timeout, max_body=max_body
    )
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1234))
    channel.makeConnection(transport)
    return reactor, channel, transport


def test_slow_headers_get_408_at_the_deadline():
    """A client that sends one byte a second is answered 408 and closed at the deadline, not later."""
    reactor, channel, transport = connect(timeout=10)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: yes\r\n" * 10
    for byte in request:
        channel.dataReceived(bytes([byte]))
        reactor.advance(1)
        if transport.disconnecting:
            break
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert transport.disconnecting
    assert reactor.seconds() <= 10.0


def test_headers_in_time_are_served():
    """A request whose headers arrive before the deadline is served, and the deadline does not fire later."""
    reactor, channel, transport = connect(timeout=10)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reactor.advance(100)
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    assert transport.value().endswith(b"hello")
    assert b"408" not in transport.value()


def test_idle_keep_alive_connection_is_closed_quietly():
    """A keep-alive connection that sends nothing after its response is closed without a 408."""
    reactor, channel, transport = connect(timeout=10)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().endswith(b"hello")
    transport.clear()
    reactor.advance(10)
    assert transport.value() == b""
    assert transport.disconnecting


def test_second_request_has_its_own_deadline():
    """The next request on a kept-alive connection gets 408 when its headers dribble past the deadline."""
    reactor, channel, transport = connect(timeout=10)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    transport.clear()
    channel.dataReceived(b"GET / HT")
    reactor.advance(10)
    assert transport.value().startswith(b"HTTP/1.1 408")


def test_body_over_the_limit_is_refused_before_it_is_read():
    """A Content-Length over the limit gets 413 as soon as the headers end."""
    _reactor, channel, transport = connect(max_body=100)
    channel.dataReceived(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\nxxxx"
    )
    assert transport.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert transport.disconnecting
    assert channel.requests[0].content is None


def test_body_within_the_limit_is_read():
    """A body within the limit reaches the resource."""
    _reactor, channel, transport = connect(max_body=100)
    channel.dataReceived(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde"
    )
    assert transport.value().startswith(b"HTTP/1.1 200 OK")


def test_chunked_body_is_refused():
    """A chunked body, whose size is unknown, gets 411."""
    _reactor, channel, transport = connect(max_body=100)
    channel.dataReceived(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 411 Length Required\r\n")
    assert transport.disconnecting


def test_silent_connection_is_aborted_at_the_deadline():
    """A connection that sends nothing (or never finishes its TLS handshake) is aborted at the deadline, without a 408 nobody would read."""
    reactor, _channel, transport = connect(timeout=10)
    reactor.advance(9.9)
    assert not transport.disconnecting
    reactor.advance(0.1)
    assert transport.value() == b""
    assert transport.disconnected


def test_larger_body_only_under_its_path_prefix():
    """A path given a larger limit takes a bigger body; every other path keeps the small one."""
    reactor = MemoryReactorClock()
    site = GuardedSite(
        Hello(), reactor=reactor, max_body=100, larger_bodies={b"/big/": 1000}
    )

    def post(path: bytes, size: int) -> bytes:
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(size).encode() + b"\r\n\r\n" + b"x" * size
        )
        return transport.value()

    assert post(b"/big/report", 500).startswith(b"HTTP/1.1 200 OK")
    assert post(b"/big/report", 1001).startswith(b"HTTP/1.1 413")
    assert post(b"/small", 500).startswith(b"HTTP/1.1 413")
    assert post(b"/small", 100).startswith(b"HTTP/1.1 200 OK")


def test_quiet_paths_keep_successes_out_of_the_access_log():
    """Successful requests under a quiet prefix are not logged; their errors and every other path are."""
    site = GuardedSite(
        Resource(),
        logFormatter=lambda when, request: request.path.decode(),
        quiet_paths=(b"/healthz", b"/v1/revocations"),
    )
    site._logFile = io.StringIO()
    for path, code in [
        (b"/healthz", 200),
        (b"/v1/revocations", 200),
        (b"/v1/revocations", 503),
        (b"/v1/tokens", 201),
    ]:
        request = DummyRequest([b""])
        request.path = path
        request.code = code
        site.log(request)
    assert site._logFile.getvalue().split() == ["/v1/revocations", "/v1/tokens"]


@pytest_twisted.ensureDeferred
async def test_the_proxies_polls_are_quiet_on_the_token_api():
    """Every path a proxy asks the token API on a timer (revocation feed, session reports) is one of the API's quiet paths."""
    asked: list[str] = []

    class Recording:
        def request(self, method: str, url: str, **kwargs: object) -> Deferred:
            asked.append(urlsplit(url).path)
            return fail(ConnectError("recorded"))

    client = ConsoleAuthClient(Recording(), "http://api", "key", Clock())
    with pytest.raises(ConsoleAuthUnavailable):
        await client.revocations(0)
    with pytest.raises(ConsoleAuthUnavailable):
        await client.report_sessions("proxy-1", [], 30)
    assert len(asked) == 2
    for path in asked:
        assert path.encode().startswith(API_POLLED_PATHS), path
