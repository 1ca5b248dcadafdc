"""
The token API client, against the real resource in memory and against
real sockets that misbehave.
"""

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txvnc.client import (
    ConnectInfo,
    ConsoleAuthError,
    ConsoleAuthUnavailable,
    OperatorClient,
)
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.httppool import pooled_http_client

KEY = "client-test-key"


def client_for(resource, key=KEY, clock=None, timeout=5.0):
    return OperatorClient(
        StubTreq(resource), "http://api.test/", key, clock or Clock(), timeout=timeout
    )


@pytest.fixture
def resource():
    return ConsoleAuthResource(MemoryTokenStore(), KEY, Clock(), "http://p:6080")


@pytest_twisted.ensureDeferred
async def test_create_check_revoke(resource):
    """The client mints a token, checks it and revokes it."""
    client = client_for(resource)
    answer = await client.create_token("10.0.0.6", 5900, instance_uuid="u", ttl=60)
    info = await client.check_token(answer["token"])
    assert info == ConnectInfo("10.0.0.6", 5900, "u", "novnc", info.expires_at)
    await client.revoke_token(answer["token"])
    assert await client.check_token(answer["token"]) is None


@pytest_twisted.ensureDeferred
async def test_revoke_instance(resource):
    """Revoking an instance through the client ends its tokens."""
    client = client_for(resource)
    token = (await client.create_token("10.0.0.6", 5900, instance_uuid="u-9"))["token"]
    await client.revoke_instance("u-9")
    assert await client.check_token(token) is None


@pytest_twisted.ensureDeferred
async def test_odd_tokens_are_quoted(resource):
    """A token with URL syntax in it is just an unknown token."""
    client = client_for(resource)
    for token in ["../tokens", "a/b", "?x=1", "%2e%2e", "#"]:
        assert await client.check_token(token) is None


@pytest_twisted.ensureDeferred
async def test_wrong_key_is_an_error_not_an_invalid_token(resource):
    """A proxy with the wrong key learns that, rather than 'invalid token'."""
    client = client_for(resource, key="wrong")
    with pytest.raises(ConsoleAuthError) as e:
        await client.check_token("anything")
    assert e.value.status == 401


@pytest_twisted.ensureDeferred
async def test_bad_request_carries_the_api_reason(resource):
    """The API's 400 reason reaches the caller."""
    client = client_for(resource)
    with pytest.raises(ConsoleAuthError, match="port must be an integer"):
        await client.create_token("h", 0)


class Silent(Resource):
    isLeaf = True

    def render(self, request):
        return NOT_DONE_YET


class Failing(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(502)
        return b"<html>bad gateway</html>"


@pytest_twisted.ensureDeferred
async def test_timeout_is_unavailable():
    """An API that never answers is reported unavailable when the timeout passes."""
    clock = Clock()
    client = client_for(Silent(), clock=clock, timeout=2.5)
    d = Deferred.fromCoroutine(client.check_token("t"))
    clock.advance(2.4)
    assert not d.called
    clock.advance(0.1)
    with pytest.raises(ConsoleAuthUnavailable, match=r"within 2\.5s"):
        await d


@pytest_twisted.ensureDeferred
async def test_server_error_is_unavailable():
    """A 5xx from the API (or a proxy in front of it) means unavailable."""
    with pytest.raises(ConsoleAuthUnavailable, match="502"):
        await client_for(Failing()).check_token("t")


@pytest_twisted.ensureDeferred
async def test_refused_connection_is_unavailable():
    """Nothing listening at the API's address means unavailable."""
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    address = port.getHost()
    await port.stopListening()
    client = OperatorClient(
        pooled_http_client(reactor),
        f"http://127.0.0.1:{address.port}",
        KEY,
        reactor,
        timeout=5,
    )
    with pytest.raises(ConsoleAuthUnavailable, match="unreachable"):
        await client.check_token("t")


@pytest_twisted.ensureDeferred
async def test_unknown_host_is_unavailable():
    """An API host name that does not resolve means unavailable."""
    client = OperatorClient(
        pooled_http_client(reactor), "http://no-such-host.invalid:6081", KEY, reactor
    )
    with pytest.raises(ConsoleAuthUnavailable, match="unreachable"):
        await client.check_token("t")


class OddAnswer(Resource):
    isLeaf = True

    def __init__(self, code, body):
        super().__init__()
        self.code, self.body = code, body

    def render(self, request):
        request.setResponseCode(self.code)
        return self.body


@pytest.mark.parametrize(
    "code, body",
    [
        (200, b"[1, 2]"),
        (200, b"not json"),
        (200, b'{"port": 1}'),
        (302, b""),
        (418, b""),
    ],
)
@pytest_twisted.ensureDeferred
async def test_odd_answers_are_unavailable_not_a_key_problem(code, body):
    """Answers that are neither connect info, 404 nor a refusal mean unavailable."""
    with pytest.raises(ConsoleAuthUnavailable, match=f"unexpected answer \\({code}\\)"):
        await client_for(OddAnswer(code, body)).check_token("t")


class HangUp(Protocol):
    def dataReceived(self, data):
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_dropped_connection_is_unavailable():
    """An API that hangs up mid-request means unavailable."""
    port = reactor.listenTCP(0, Factory.forProtocol(HangUp), interface="127.0.0.1")
    try:
        client = OperatorClient(
            pooled_http_client(reactor),
            f"http://127.0.0.1:{port.getHost().port}",
            KEY,
            reactor,
        )
        with pytest.raises(ConsoleAuthUnavailable, match="unreachable"):
            await client.check_token("t")
    finally:
        await port.stopListening()


class CountingSite:
    """A real token endpoint on 127.0.0.1 that counts the TCP connections made to it."""

    def __init__(self) -> None:
        from twisted.web.server import Site

        root = OddAnswer(404, b'{"error": "not found"}')
        self.site = Site(root)
        self.connections = 0
        build = self.site.buildProtocol

        def counting(addr):
            self.connections += 1
            return build(addr)

        self.site.buildProtocol = counting
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"


@pytest_twisted.ensureDeferred
async def test_a_burst_of_checks_reuses_a_fixed_set_of_connections():
    """
    Forty checks at once, twice, over a pool of four: four connections are
    opened in all (none opened and closed per request), and the pool logs
    no "Starting factory" / "Stopping factory" lines.
    """
    from twisted.internet.defer import gatherResults
    from twisted.logger import globalLogPublisher
    from twisted.web.client import _HTTP11ClientFactory

    server = CountingSite()
    events = []
    globalLogPublisher.addObserver(events.append)
    http = pooled_http_client(reactor, max_per_host=4)
    client = OperatorClient(http, server.url, KEY, reactor, max_in_flight=4)
    try:
        for _ in range(2):
            answers = await gatherResults(
                [Deferred.fromCoroutine(client.check_token(f"t{i}")) for i in range(40)]
            )
            assert answers == [None] * 40
        assert server.connections == 4
    finally:
        globalLogPublisher.removeObserver(events.append)
        await http._agent._pool.closeCachedConnections()
        await server.port.stopListening()
    # Only this pool's factories count: the global publisher also sees other
    # pools of the same reactor (a treq default pool an earlier test left)
    # closing their idle connections, with Twisted's own noisy factory.
    pool = http._agent._pool
    assert issubclass(pool._factory, _HTTP11ClientFactory)
    noisy = [
        e
        for e in events
        if "factory" in str(e.get("log_format", ""))
        and isinstance(e.get("factory"), pool._factory)
    ]
    assert noisy == []


@pytest_twisted.ensureDeferred
async def test_a_check_waiting_for_a_connection_times_out_as_unavailable():
    """A request's deadline counts its wait for a free slot; slots are given back whatever happens."""
    clock = Clock()
    sent = []

    class Hanging:
        def request(self, *a, **k):
            sent.append(Deferred())
            return sent[-1]

    client = OperatorClient(Hanging(), "http://api", KEY, clock, timeout=5, max_in_flight=1)
    first = Deferred.fromCoroutine(client.check_token("a"))
    clock.advance(1)
    second = Deferred.fromCoroutine(client.check_token("b"))
    assert len(sent) == 1  # the second waits for the one slot
    clock.advance(4.5)  # the first's deadline: its slot goes to the second
    with pytest.raises(ConsoleAuthUnavailable, match="within 5s"):
        await first
    assert len(sent) == 2
    clock.advance(0.5)  # the second's deadline, counted from its call
    with pytest.raises(ConsoleAuthUnavailable, match="within 5s"):
        await second
    third = Deferred.fromCoroutine(client.check_token("c"))
    assert len(sent) == 3  # every slot was given back
    clock.advance(5)
    with pytest.raises(ConsoleAuthUnavailable):
        await third
