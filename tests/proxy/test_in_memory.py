"""
The WebSocket handshake, admission and a console's life, in memory: the
proxy's real site and the real token API (StubTreq), browsers and VNC
servers joined with twisted.test.iosim, one Clock, no socket.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.web.resource import Resource

from txvnc.core.forwarded import parse_networks
from txvnc.core.targets import TargetPolicy
from txvnc.proxy import closecodes
from txvnc.proxy.admission import (
    INVALID_TOKEN,
    ORIGIN_NOT_ALLOWED,
    TARGET_NOT_ALLOWED,
    TOO_MANY_FAILURES,
    UNAVAILABLE,
)
from txvnc.proxy.limits import Limits

from .harness import LogCapture
from .memory import MemoryProxy, RawUpgrade


class Broken(Resource):
    """A token API that answers 503 to everything."""

    isLeaf = True

    def render(self, request):
        request.setResponseCode(503)
        return b"{}"


@pytest_twisted.ensureDeferred
async def test_a_console_opens_relays_and_closes_in_memory():
    """A valid token opens a console: bytes pass both ways untouched, and the browser's close ends it with its audit events and closing line."""
    proxy = MemoryProxy()
    token = await proxy.mint(instance_uuid="inst-1")
    with LogCapture() as log:
        browser = proxy.browser(f"token={token}")
        assert browser.opened.called
        (vnc,) = proxy.vnc.servers
        (console,) = proxy.factory.consoles

        vnc.transport.write(b"RFB 003.008\n")
        browser.sendMessage(b"\x04\x01\x00\x00\x00\x00\x00\x61", isBinary=True)
        proxy.flush()
        assert browser.received == 12
        assert vnc.received == b"\x04\x01\x00\x00\x00\x00\x00\x61"
        assert (console.bytes_from_vnc, console.bytes_to_vnc) == (12, 8)

        browser.sendClose(1000)
        proxy.flush()
    assert browser.closed.called and vnc.lost
    assert not proxy.factory.consoles
    assert proxy.factory.counter.total == 0
    assert [e for e, _ in proxy.audit.events] == ["console.opened", "console.closed"]
    closed = proxy.audit.events[1][1]
    assert (closed["why"], closed["bytes_to_vnc"], closed["bytes_from_vnc"]) == (
        "browser closed (1000)",
        8,
        12,
    )
    lines = log.lines()
    assert any("accepted, instance inst-1" in line for line in lines)
    assert any("console closed, instance inst-1" in line for line in lines)
    assert not [line for line in lines if token in line]


@pytest.mark.parametrize(
    "query, origin, expected",
    [
        ("", "same", (403, INVALID_TOKEN)),
        ("token=no-such-token", "same", (403, INVALID_TOKEN)),
        ("token={token}", "https://evil.example", (403, ORIGIN_NOT_ALLOWED)),
        ("token={token}", "null", (403, ORIGIN_NOT_ALLOWED)),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refused_handshakes_in_memory(query, origin, expected):
    """Missing and unknown tokens and foreign origins are refused with the handshake's status and reason, before any VNC connection."""
    proxy = MemoryProxy()
    token = await proxy.mint()
    assert proxy.upgrade(query.format(token=token), origin=origin) == expected
    assert proxy.vnc.servers == []
    assert proxy.factory.counter.total == 0


@pytest_twisted.ensureDeferred
async def test_the_handshake_uses_a_single_use_token():
    """The handshake spends a single-use token (the page's check does not): a second console with it is refused."""
    proxy = MemoryProxy()
    token = await proxy.mint(single_use=True)
    assert proxy.browser(f"token={token}").opened.called
    assert proxy.upgrade(f"token={token}") == (403, INVALID_TOKEN)


@pytest_twisted.ensureDeferred
async def test_token_api_down_is_503_in_memory():
    """A token API answering 503 gets the handshake a 503, not counted against the client."""
    proxy = MemoryProxy(api=Broken(), max_failures=1)
    for _ in range(3):
        assert proxy.upgrade("token=some-token") == (503, UNAVAILABLE)
    assert not proxy.factory.guard.blocked("127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_handshakes_and_checks_share_the_guard_in_memory():
    """Failed handshakes and failed checks count in one budget; past it a good token still opens (its neighbours are not locked out), while failures are answered 429 and paced on the clock."""
    proxy = MemoryProxy(max_failures=2)
    token = await proxy.mint()
    assert proxy.upgrade("token=guess-1") == (403, INVALID_TOKEN)
    response = await proxy_check(proxy, "guess-2")
    assert response == 403
    assert proxy.upgrade("token=guess-3") == (403, INVALID_TOKEN)
    assert proxy.factory.guard.blocked("127.0.0.1")
    # The first check of a blocked client is not delayed: a good token opens.
    assert proxy.upgrade(f"token={token}")[0] == 101
    reasons = [f["reason"] for e, f in proxy.audit.events if e == "console.refused"]
    assert reasons == ["invalid token", "invalid token (token check)", "invalid token"]
    # The next turn is window / max_failures = 30 s away, over the 10 s a
    # request may wait: refused at once, without asking the API.
    assert proxy.upgrade("token=guess-4") == (429, TOO_MANY_FAILURES)
    assert await proxy_check(proxy, token) == 429
    proxy.clock.advance(61)
    assert proxy.browser(f"token={token}").opened.called


@pytest_twisted.ensureDeferred
async def test_a_blocked_client_waits_its_turn_and_a_good_token_opens():
    """Behind one address over its budget, a good token waits for its paced check and opens; a guess waits and gets 429; the API is asked once per turn."""
    proxy = MemoryProxy(max_failures=20)
    token = await proxy.mint()
    for n in range(21):
        assert proxy.upgrade(f"token=guess-{n}") == (403, INVALID_TOKEN)
    guess = RawUpgrade("/websockify?token=guess-x", {"Origin": "http://proxy.test"})
    proxy._connect(guess)
    assert guess.status == (429, TOO_MANY_FAILURES)  # checked at once, failed
    good = RawUpgrade(f"/websockify?token={token}", {"Origin": "http://proxy.test"})
    proxy._connect(good)
    assert good.answer == b""  # waiting for its turn, 3 s on
    proxy.clock.advance(3)
    proxy.flush()
    assert good.status[0] == 101
    refused = [e for e, _ in proxy.audit.events if e == "console.refused"]
    assert len(refused) == 22


async def proxy_check(proxy, token):
    response = await StubTreq(proxy.site.resource).post(
        "http://proxy.test/token-check",
        json={"token": token},
        headers={"Origin": "http://proxy.test"},
    )
    await response.content()
    return response.code


@pytest_twisted.ensureDeferred
async def test_target_outside_the_proxy_policy_in_memory():
    """A token whose target the proxy's own policy refuses gets 403 and an audit event naming the target."""
    proxy = MemoryProxy(target_policy=TargetPolicy.parse(["192.0.2.0/24:5900"]))
    token = await proxy.mint(instance_uuid="inst-9")
    assert proxy.upgrade(f"token={token}") == (403, TARGET_NOT_ALLOWED)
    ((event, fields),) = proxy.audit.events
    assert (event, fields["reason"], fields["target"]) == (
        "console.refused",
        "target not allowed",
        "10.0.0.5:5900",
    )


@pytest_twisted.ensureDeferred
async def test_trusted_proxy_names_the_client_in_memory():
    """Behind a trusted proxy, the console's client is the one X-Forwarded-For names."""
    proxy = MemoryProxy(trusted_proxies=parse_networks(["127.0.0.0/8"]))
    token = await proxy.mint()
    assert proxy.upgrade(
        f"token={token}", **{"X-Forwarded-For": "203.0.113.7"}
    ) == (101, "Switching Protocols")
    (console,) = proxy.factory.consoles
    assert console.client == "203.0.113.7"


@pytest_twisted.ensureDeferred
async def test_over_the_limit_the_console_opens_to_close_with_1013():
    """Over --max-connections the upgrade is accepted so the page can read 1013 and its reason; the token is never asked about."""
    proxy = MemoryProxy(limits=Limits(keepalive_interval=0, max_connections=1))
    first = proxy.browser(f"token={await proxy.mint()}")
    assert first.opened.called
    token = await proxy.mint(single_use=True)
    second = proxy.browser(f"token={token}")
    _, code, reason = second.closed.result
    assert (code, reason) == (
        closecodes.TRY_AGAIN_LATER,
        closecodes.REASONS[closecodes.TRY_AGAIN_LATER],
    )
    assert proxy.factory.counter.total == 1
    # The single-use token was not spent: once there is room, it opens.
    first.sendClose(1000)
    proxy.flush()
    assert proxy.browser(f"token={token}").opened.called


@pytest_twisted.ensureDeferred
async def test_unreachable_vnc_server_closes_1011_in_memory():
    """A VNC server that refuses the connection closes the console with 1011 and says why in the closing line."""
    proxy = MemoryProxy()
    proxy.vnc.refuse = ConnectionRefusedError()
    token = await proxy.mint()
    browser = proxy.browser(f"token={token}")
    _, code, reason = browser.closed.result
    assert (code, reason) == (
        1011,
        "The console is unavailable: cannot reach its VNC server",
    )
    closed = dict(proxy.audit.events)["console.closed"]
    assert closed["why"].startswith("cannot connect to VNC server")


@pytest_twisted.ensureDeferred
async def test_an_error_in_onopen_closes_1011_in_memory():
    """An exception while the console opens is logged with its traceback, and the console closes with 1011 and is counted out."""
    proxy = MemoryProxy()

    def explode(event, **fields):
        if event == "console.opened":
            raise RuntimeError("audit exploded")

    proxy.audit.record = explode
    token = await proxy.mint()
    with LogCapture() as log:
        browser = proxy.browser(f"token={token}")
    _, code, _ = browser.closed.result
    assert code == 1011
    assert log.failures(RuntimeError) == ["audit exploded"]
    assert not proxy.factory.consoles
    assert proxy.factory.counter.total == 0


@pytest_twisted.ensureDeferred
async def test_an_error_once_vnc_is_connected_closes_1011_in_memory():
    """An exception in the step that wires the new VNC connection to the browser closes the console with 1011 (the test written before the fix hung)."""
    proxy = MemoryProxy()
    proxy.vnc.connect = lambda info, protocol: succeed(protocol)  # no transport
    token = await proxy.mint()
    with LogCapture() as log:
        browser = proxy.browser(f"token={token}")
    _, code, _ = browser.closed.result
    assert code == 1011
    assert log.failures(AttributeError)
    assert not proxy.factory.consoles


@pytest_twisted.ensureDeferred
async def test_a_browser_leaving_cancels_the_vnc_connect_in_memory():
    """A browser that leaves while its VNC connection is being made cancels it; the console is counted out as opened and closed."""
    proxy = MemoryProxy()
    cancelled = []
    proxy.vnc.connect = lambda info, protocol: Deferred(cancelled.append)
    token = await proxy.mint()
    browser = proxy.browser(f"token={token}")
    assert browser.opened.called
    browser.transport.loseConnection()
    proxy.flush()
    assert len(cancelled) == 1
    assert not proxy.factory.consoles
    closed = dict(proxy.audit.events)["console.closed"]
    assert closed["why"] == "browser connection lost"


@pytest_twisted.ensureDeferred
async def test_the_vnc_server_hanging_up_closes_1000_in_memory():
    """When the VNC server hangs up, the browser gets 1000 and the reason, after the bytes sent before."""
    proxy = MemoryProxy()
    token = await proxy.mint()
    browser = proxy.browser(f"token={token}")
    (vnc,) = proxy.vnc.servers
    vnc.transport.write(b"bye")
    vnc.transport.loseConnection()
    proxy.flush()
    assert browser.received == 3
    _, code, reason = browser.closed.result
    assert (code, reason) == (1000, "The VNC server closed the console")
