"""
POST /token-check, the console page's question before it reconnects: the
resource in memory (StubTreq against the real token API, on a Clock), then
over real sockets through the proxy's whole site.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.support.mint import mint
from txvnc.client import ConsoleAuthClient
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.core.audit import AuditLog
from txvnc.core.forwarded import parse_networks
from txvnc.core.targets import TargetPolicy
from txvnc.proxy.guard import AuthFailureGuard
from txvnc.proxy.site import ConsoleRoot, console_site
from txvnc.proxy.tokencheck import TokenCheckResource, token_from_body
from txvnc.proxy.websocket import ConsoleProxyFactory

from .harness import KEY as STACK_KEY
from .harness import Stack
from .test_site import RawHTTP

KEY = "token-check-key"
INVALID = "The token is invalid or has expired"
CHECK_URL = "http://proxy.test/token-check"
#: StubTreq's client: every request comes from here.
CLIENT = "127.0.0.1"


class RecordingAudit(AuditLog):
    """An audit log that keeps its events in a list."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


class Proxy:
    """
    A proxy factory whose token client asks the real token API in memory,
    both on one Clock, with the check resource in front of it.
    """

    def __init__(
        self,
        api: Resource | None = None,
        max_failures: int = 20,
        policy: TargetPolicy | None = None,
        key: str = KEY,
        trusted_proxies: tuple = (),
    ) -> None:
        self.clock = Clock()
        self.store = MemoryTokenStore()
        self.api = ConsoleAuthResource(
            self.store, KEY, self.clock, "http://proxy.test",
            policy=TargetPolicy.allow_all(),
        )
        self.admin = StubTreq(self.api)
        auth = ConsoleAuthClient(
            StubTreq(api if api is not None else self.api),
            "http://api.test",
            key,
            self.clock,
            timeout=5.0,
        )
        recording = RecordingAudit(self.clock)
        self.audit = recording.events
        self.factory = ConsoleProxyFactory(
            self.clock,
            auth,
            target_policy=policy or TargetPolicy.allow_all(),
            guard=AuthFailureGuard(self.clock, max_failures),
            audit=recording,
            trusted_proxies=trusted_proxies,
        )
        check = TokenCheckResource(self.factory.admission, self.factory.trusted_proxies)
        root = ConsoleRoot(Resource(), Resource(), {b"token-check": check})
        self.http = StubTreq(root)

    async def mint(self, ttl: int = 60, **extra: Any) -> str:
        fields = {"host": "10.0.0.5", "port": 5900, "ttl": ttl, **extra}
        return await mint("http://api.test", KEY, http=self.admin, **fields)

    async def use(self, token: str) -> int:
        """What the handshake does: POST .../use."""
        response = await self.admin.post(
            f"http://api.test/v1/tokens/{token}/use",
            headers={"Authorization": "Bearer " + KEY},
        )
        await response.content()
        return int(response.code)

    async def check(
        self,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> tuple[int, Any]:
        if body is None:
            body = json.dumps({"token": token}).encode()
        response = await self.http.request(
            method,
            CHECK_URL,
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        raw = await response.content()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = raw
        return response.code, answer


@pytest.fixture
def log_lines():
    """Every log event's formatted text while the test runs."""
    from twisted.logger import formatEvent

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_a_valid_token_is_valid_and_still_opens_a_console(log_lines):
    """A live token answers 200 valid, and the check leaves it usable; the token is never logged."""
    proxy = Proxy()
    token = await proxy.mint()
    assert await proxy.check(token=token) == (200, {"status": "valid"})
    assert await proxy.use(token) == 200
    assert any("token check: token" in line and "is valid" in line for line in log_lines)
    assert not [line for line in log_lines if token in line]


@pytest_twisted.ensureDeferred
async def test_a_single_use_token_is_not_used_up_by_checks():
    """Checking a single-use token any number of times leaves it for the console; once used, it is invalid."""
    proxy = Proxy()
    token = await proxy.mint(single_use=True)
    for _ in range(3):
        assert await proxy.check(token=token) == (200, {"status": "valid"})
    assert await proxy.use(token) == 200
    assert await proxy.check(token=token) == (403, {"error": INVALID})
    assert await proxy.use(token) == 404


@pytest_twisted.ensureDeferred
async def test_expired_revoked_and_unknown_tokens_are_invalid(log_lines):
    """Expired, revoked and unknown tokens get the proxy's own sentence, and no token is logged."""
    proxy = Proxy()
    expiring = await proxy.mint(ttl=10)
    revoked = await proxy.mint(ttl=600)
    assert (await proxy.check(token=expiring))[0] == 200
    proxy.clock.advance(11)
    assert await proxy.check(token=expiring) == (403, {"error": INVALID})

    response = await proxy.admin.delete(
        f"http://api.test/v1/tokens/{revoked}", headers={"Authorization": "Bearer " + KEY}
    )
    assert response.code == 204
    assert await proxy.check(token=revoked) == (403, {"error": INVALID})
    assert await proxy.check(token="no-such-token") == (403, {"error": INVALID})
    for token in (expiring, revoked, "no-such-token"):
        assert not [line for line in log_lines if token in line]
    refused = [f for event, f in proxy.audit if event == "console.refused"]
    assert [f["reason"] for f in refused] == ["invalid token (token check)"] * 3
    assert all(f["client"].startswith(CLIENT + ":") for f in refused)


@pytest.mark.parametrize(
    "body",
    [{}, {"token": ""}, {"token": "   "}, {"token": 5}, {"token": "x" * 257}],
)
@pytest_twisted.ensureDeferred
async def test_no_usable_token_is_an_invalid_token(body):
    """A body without a usable token is answered like a missing token in the handshake, and counted."""
    proxy = Proxy(max_failures=20)
    code, answer = await proxy.check(json.dumps(body).encode())
    assert (code, answer) == (403, {"error": INVALID})
    assert [f["reason"] for _, f in proxy.audit] == ["no token (token check)"]


@pytest_twisted.ensureDeferred
async def test_failed_checks_trip_the_same_guard_as_handshakes():
    """Failed checks count in the brute-force guard: past the limit checks are paced (one per minute / 3 here), a good token's check still says valid, and one whose turn is over 10 s away gets 429 without asking the API, until the cool-down ends."""
    proxy = Proxy(max_failures=3)
    good = await proxy.mint(ttl=600)
    for i in range(4):
        assert (await proxy.check(token=f"guess-{i}"))[0] == 403
    assert proxy.factory.guard.blocked(CLIENT)
    too_many = (429, {"error": "Too many failed console requests; try again later"})
    assert await proxy.check(token=good) == (200, {"status": "valid"})
    assert await proxy.check(token="guess-again") == too_many
    # The next turn is 20 s away: nothing was asked of the API for it, so
    # nothing more is audited.
    assert len(proxy.audit) == 4
    proxy.clock.advance(61)
    assert await proxy.check(token=good) == (200, {"status": "valid"})


@pytest_twisted.ensureDeferred
async def test_the_guard_counts_the_client_a_trusted_proxy_names():
    """Behind a trusted load balancer, failures count against the X-Forwarded-For client, not the balancer."""
    proxy = Proxy(max_failures=1, trusted_proxies=parse_networks(["127.0.0.0/8"]))
    for _ in range(2):
        await proxy.check(token="guess", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxy.factory.guard.blocked("203.0.113.9")
    assert not proxy.factory.guard.blocked(CLIENT)


class Broken(Resource):
    """A token API that answers 503 to everything."""

    isLeaf = True

    def render(self, request):
        request.setResponseCode(503)
        return b"{}"


class Silent(Resource):
    """A token API that never answers."""

    isLeaf = True

    def render(self, request):
        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_token_api_down_is_503_and_not_counted(log_lines):
    """When the token API fails, the page is told 503 and the client is not charged a failure."""
    proxy = Proxy(api=Broken(), max_failures=1)
    for _ in range(3):
        assert await proxy.check(token="some-token") == (
            503,
            {"error": "Console authentication is unavailable"},
        )
    assert not proxy.factory.guard.blocked(CLIENT)
    assert any("cannot check token" in line for line in log_lines)


@pytest_twisted.ensureDeferred
async def test_token_api_silent_is_503_at_the_check_timeout():
    """A token API that never answers gives 503 once --token-check-timeout passes on the clock."""
    proxy = Proxy(api=Silent())
    answer = Deferred.fromCoroutine(proxy.check(token="some-token"))
    assert not answer.called
    proxy.clock.advance(5.1)
    proxy.http.flush()
    assert answer.called
    assert await answer == (503, {"error": "Console authentication is unavailable"})


@pytest_twisted.ensureDeferred
async def test_a_proxy_with_the_wrong_key_says_unavailable(log_lines):
    """A proxy whose API key is refused answers 503, logs a critical line, and does not call the token invalid."""
    proxy = Proxy(key="not-the-key", max_failures=1)
    token = await proxy.mint()
    for _ in range(2):
        assert (await proxy.check(token=token))[0] == 503
    assert not proxy.factory.guard.blocked(CLIENT)
    assert any("refused this proxy" in line for line in log_lines)


@pytest_twisted.ensureDeferred
async def test_a_target_outside_the_proxy_policy_is_refused():
    """A token the proxy's own target policy would refuse is reported as such."""
    proxy = Proxy(policy=TargetPolicy.parse(["192.0.2.0/24:5900"]))
    token = await proxy.mint()
    assert await proxy.check(token=token) == (
        403,
        {"error": "The console's target is not allowed"},
    )


@pytest_twisted.ensureDeferred
async def test_origin_policy_is_the_handshake_s():
    """A foreign Origin is refused like a foreign handshake; the page's own origin is accepted."""
    proxy = Proxy()
    token = await proxy.mint()
    assert await proxy.check(token=token, headers={"Origin": "https://evil.example"}) == (
        403,
        {"error": "Origin not allowed"},
    )
    assert await proxy.check(token=token, headers={"Origin": "http://proxy.test"}) == (
        200,
        {"status": "valid"},
    )
    assert not proxy.audit


@pytest_twisted.ensureDeferred
async def test_bad_requests():
    """Only a POST with a JSON object is taken: other methods, types and bodies are refused, uncounted."""
    proxy = Proxy(max_failures=1)
    token = await proxy.mint()
    for method in ("GET", "HEAD", "PUT", "OPTIONS"):
        response = await proxy.http.request(method, CHECK_URL)
        await response.content()
        assert response.code == 405, method
        assert response.headers.getRawHeaders(b"allow") == [b"POST"]
    code, answer = await proxy.check(token=token, headers={"Content-Type": "text/plain"})
    assert (code, answer) == (415, {"error": "The body must be application/json"})
    for body in (b"token=abc", b"[1]", b"\xff\xfe", b""):
        code, answer = await proxy.check(body)
        assert code == 400, body
        assert answer["error"].startswith("Bad request")
    assert not proxy.factory.guard.blocked(CLIENT)


def test_token_from_body():
    """The token is taken from a JSON object and trimmed; anything else is no token or a bad body."""
    assert token_from_body(b'{"token": " abc "}') == "abc"
    assert token_from_body(b'{"token": null}') is None
    with pytest.raises(ValueError):
        token_from_body(b'"abc"')
    with pytest.raises(ValueError):
        token_from_body(b"{")


# Real sockets: the proxy's whole site


@pytest.fixture
def stack():
    s = Stack(max_auth_failures=100)
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


@pytest_twisted.ensureDeferred
async def test_over_a_socket_the_check_answers_and_the_access_log_hides_the_token(stack):
    """Through the real site, the check answers 200 then 403 after revocation, and the access log line has no token."""
    stack.proxy_port.factory._logFile = io.StringIO()
    token = await stack.mint(5900)
    url = f"http://{stack.host}/token-check"
    origin = {"Origin": f"http://{stack.host}", "Content-Type": "application/json"}
    response = await treq.post(url, json={"token": token}, headers=origin, persistent=False)
    assert response.code == 200
    assert await response.json() == {"status": "valid"}
    assert response.headers.getRawHeaders(b"cache-control") == [b"no-store"]

    await treq.delete(
        f"{stack.api_url}/v1/tokens/{token}", headers={"Authorization": "Bearer " + STACK_KEY}
    )
    response = await treq.post(url, json={"token": token}, headers=origin, persistent=False)
    assert response.code == 403
    assert await response.json() == {"error": INVALID}

    access = stack.proxy_port.factory._logFile.getvalue()
    assert access.count('"POST /token-check HTTP/1.1" 200') == 1
    assert access.count('"POST /token-check HTTP/1.1" 403') == 1
    assert token not in access


@pytest_twisted.ensureDeferred
async def test_over_a_socket_only_the_check_takes_a_body(stack):
    """The check takes a small body; a larger one, or a body on any other path, is refused from its headers."""
    url = f"http://{stack.host}"
    response = await treq.post(
        url + "/token-check", data=b"x" * 4096,
        headers={"Content-Type": "application/json"}, persistent=False,
    )
    assert response.code == 413
    response = await treq.post(
        url + "/vnc_auto.html", data=b"{}",
        headers={"Content-Type": "application/json"}, persistent=False,
    )
    assert response.code == 413
    # A body whose size nobody knows yet is refused before any of it is read.
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", stack.port)
    raw = RawHTTP(
        b"POST /token-check HTTP/1.1\r\nHost: " + stack.host.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    await connectProtocol(endpoint, raw)
    assert (await raw.done).startswith(b"HTTP/1.1 411 ")


@pytest_twisted.ensureDeferred
async def test_over_a_socket_checks_and_handshakes_share_one_failure_budget():
    """Over real sockets, failed checks and failed handshakes from one client add up: past the budget both are paced, a valid token's check still answers 200, and a handshake whose turn is over 10 s away answers 429."""
    stack = Stack(max_auth_failures=3)
    try:
        token = await stack.mint(5900)
        url = f"http://{stack.host}/token-check"

        async def check(value: str) -> int:
            response = await treq.post(url, json={"token": value}, persistent=False)
            await response.content()
            return int(response.code)

        assert await stack.raw_upgrade("token=guess-1") == (403, INVALID)
        assert await check("guess-2") == 403
        assert await stack.raw_upgrade("token=guess-3") == (403, INVALID)
        assert await check("guess-4") == 403  # the fourth failure: cool-down
        assert await check(token) == 200  # checked at once: valid
        code, phrase = await stack.raw_upgrade(f"token={token}")
        assert (code, phrase) == (429, "Too many failed console requests; try again later")
    finally:
        await stack.stop()


def test_the_site_serves_the_check():
    """console_site mounts the check at /token-check beside the page."""
    factory = ConsoleProxyFactory(Clock(), ConsoleAuthClient(StubTreq(Resource()), "http://a", KEY, Clock()))
    site = console_site(factory)
    child = site.resource.getChildWithDefault(b"token-check", _request())
    assert isinstance(child, TokenCheckResource)


def _request():
    from twisted.web.test.requesthelper import DummyRequest

    return DummyRequest([b"token-check"])
