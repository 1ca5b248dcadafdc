"""
Timeouts and limits: the pure pieces with a Clock, then each limit on a
console over real loopback sockets (with a Clock standing in for the
proxy's timers where the limit is a timer, and real time once).
"""

import json
from datetime import UTC, datetime

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock

from tests.support.browser import Browser
from tests.support.fakevnc import FakeVNCServer
from txvnc.proxy import closecodes
from txvnc.proxy.limits import (
    ConnectionCounter,
    Limits,
    SessionTimers,
    is_user_input,
    session_cap,
)

from .harness import Stack

KEY_DOWN = bytes([4, 1, 0, 0, 0, 0, 0, 0x61])
POINTER = bytes([5, 0, 0, 10, 0, 10])
UPDATE_REQUEST = bytes([3, 1, 0, 0, 0, 0, 4, 0, 3, 0])


class Timeline:
    """
    Records what L{SessionTimers} reports.
    """

    def __init__(self, clock):
        self.clock = clock
        self.warnings = []
        self.expired = []

    def warn(self, kind, seconds):
        self.warnings.append((self.clock.seconds(), kind, seconds))

    def expire(self, code):
        self.expired.append((self.clock.seconds(), code))


def timers(idle=0.0, session=0.0):
    clock = Clock()
    line = Timeline(clock)
    t = SessionTimers(clock, idle, session, line.warn, line.expire)
    t.start()
    return clock, line, t


def test_a_failing_idle_warning_does_not_stop_the_idle_timeout():
    """A warning that raises (the page's notice failed) still leaves the console to close at its idle deadline."""
    clock = Clock()
    line = Timeline(clock)

    def broken_warn(kind, seconds):
        raise RuntimeError("the notice could not be sent")

    SessionTimers(clock, 300, 0, broken_warn, line.expire).start()
    with pytest.raises(RuntimeError):
        clock.advance(240)
    clock.advance(60)
    assert line.expired == [(300, closecodes.IDLE_TIMEOUT)]


def test_idle_warns_a_minute_before_then_expires():
    """Without input the page is warned at idle-60s and closed at idle with 4002."""
    clock, line, _ = timers(idle=300)
    clock.advance(239)
    assert line.warnings == [] and line.expired == []
    clock.advance(1)
    assert line.warnings == [(240, "idle", 60)]
    clock.advance(59)
    assert line.expired == []
    clock.advance(1)
    assert line.expired == [(300, closecodes.IDLE_TIMEOUT)]
    assert clock.getDelayedCalls() == []


def test_input_moves_the_idle_deadline():
    """Input after the warning moves both the next warning and the deadline."""
    clock, line, t = timers(idle=300)
    clock.advance(240)
    clock.advance(10)
    t.input()
    clock.advance(50)  # the old deadline passes quietly
    assert line.expired == []
    clock.advance(189)
    assert line.warnings == [(240, "idle", 60)]
    clock.advance(1)
    assert line.warnings[-1] == (490, "idle", 60)
    clock.advance(60)
    assert line.expired == [(550, closecodes.IDLE_TIMEOUT)]


def test_steady_input_never_idles():
    """A console with input every 100s of a 300s idle timeout stays open for hours."""
    clock, line, t = timers(idle=300)
    for _ in range(100):
        clock.advance(100)
        t.input()
    assert line.expired == [] and line.warnings == []


def test_session_cap_ignores_input():
    """The session cap warns a minute before and closes with 4003 whatever the input."""
    clock, line, t = timers(session=600)
    for _ in range(54):
        clock.advance(10)
        t.input()
    assert line.warnings == [(540, "session", 60)]
    clock.advance(60)
    assert line.expired == [(600, closecodes.MAX_SESSION)]


def test_short_limits_warn_at_once():
    """A limit shorter than the warning lead warns at the start, with the whole limit."""
    clock, line, _ = timers(idle=30)
    clock.advance(0)
    assert line.warnings == [(0, "idle", 30)]
    clock.advance(30)
    assert line.expired == [(30, closecodes.IDLE_TIMEOUT)]


def test_stop_cancels_everything():
    """Stopping the timers leaves no delayed call behind."""
    clock, line, t = timers(idle=300, session=600)
    t.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(1000)
    assert line.expired == []


def test_user_input_types():
    """Key, pointer, clipboard and QEMU key messages are input; update requests are not."""
    assert is_user_input(KEY_DOWN)
    assert is_user_input(POINTER)
    assert is_user_input(bytes([6, 0, 0, 0, 0, 0, 0, 1, 0x61]))
    assert is_user_input(bytes([255, 0, 0, 1]))
    assert not is_user_input(UPDATE_REQUEST)
    assert not is_user_input(bytes([2, 0, 0, 1, 0, 0, 0, 0]))
    assert not is_user_input(b"")


def test_counter_limits_total_and_per_token():
    """The counter refuses over each limit, and frees slots on leave."""
    counter = ConnectionCounter(max_total=2, max_per_token=1)
    assert counter.enter() is None
    assert counter.enter() is None
    refusal = counter.enter()
    assert refusal.code == closecodes.TRY_AGAIN_LATER
    counter.leave()
    assert counter.enter() is None

    assert counter.enter_token("a") is None
    assert counter.enter_token("b") is None
    refusal = counter.enter_token("a")
    assert refusal.code == closecodes.TOO_MANY_FOR_TOKEN
    counter.leave_token("a")
    assert counter.for_token("a") == 0
    assert counter.enter_token("a") is None


def test_unlimited_counter():
    """Zero means no limit."""
    counter = ConnectionCounter()
    for _ in range(10000):
        assert counter.enter() is None
        assert counter.enter_token("t") is None


# Over real sockets


class NoticeBrowser(Browser):
    """
    A browser that keeps the text notices and pings it gets.
    """

    def __init__(self):
        super().__init__()
        self.notices = []
        self._notice_waiters = []
        #: The proxy's keepalive notices, apart from the other notices.
        self.keepalives = []
        self._keepalive_waiters = []
        #: The proxy's policy notice (sent once, at open), apart too.
        self.policies = []
        self.pings = 0
        self._ping_waiters = []

    def onMessage(self, payload, isBinary):
        if not isBinary and json.loads(payload).get("type") == "policy":
            self.policies.append(json.loads(payload))
            return
        if not isBinary and json.loads(payload).get("type") == "keepalive":
            self.keepalives.append(json.loads(payload))
            waiters, self._keepalive_waiters = self._keepalive_waiters, []
            for d in waiters:
                d.callback(len(self.keepalives))
            return
        if not isBinary:
            self.notices.append(json.loads(payload))
            waiters, self._notice_waiters = self._notice_waiters, []
            for d in waiters:
                d.callback(self.notices[-1])
            return
        super().onMessage(payload, isBinary)

    def next_keepalive(self):
        d = Deferred()
        self._keepalive_waiters.append(d)
        return d

    def next_notice(self):
        d = Deferred()
        self._notice_waiters.append(d)
        return d

    def onPing(self, payload):
        super().onPing(payload)
        self.pings += 1
        waiters, self._ping_waiters = self._ping_waiters, []
        for d in waiters:
            d.callback(self.pings)

    def next_ping(self):
        d = Deferred()
        self._ping_waiters.append(d)
        return d


@pytest.fixture
def vnc():
    server = FakeVNCServer()
    yield server
    pytest_twisted.blockon(server.stop())


def make_stack(clock=None, **limits):
    return Stack(limits=Limits(**limits), clock=clock)


async def open_console(stack, vnc, token=None, notices=True, protocol=NoticeBrowser):
    token = token or await stack.mint(vnc.address.port)
    query = f"token={token}" + ("&notices=1" if notices else "")
    connected = vnc.next_connection()
    browser = await stack.open_browser(query, protocol=protocol)
    await browser.opened
    server_side = await connected
    return browser, server_side


def only_console(stack):
    (console,) = stack.factory.consoles
    return console


async def with_stack(stack, body):
    try:
        await body()
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_idle_console_is_warned_then_closed(vnc):
    """An idle console gets a notice a minute before, then close 4002 with its reason."""
    clock = Clock()
    stack = make_stack(clock, idle_timeout=300)

    async def body():
        browser, server_side = await open_console(stack, vnc)
        # noVNC's own update requests are not input.
        browser.sendMessage(UPDATE_REQUEST, isBinary=True)
        await vnc.received_at_least(len(UPDATE_REQUEST))
        notice = browser.next_notice()
        clock.advance(240)
        assert await notice == {"type": "idle-warning", "seconds": 60}
        clock.advance(60)
        _, code, reason = await browser.closed
        assert code == closecodes.IDLE_TIMEOUT
        assert reason == closecodes.REASONS[closecodes.IDLE_TIMEOUT]
        await server_side.lost

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_input_keeps_a_console_open(vnc):
    """Key and pointer events from the browser reset the idle timeout."""
    clock = Clock()
    stack = make_stack(clock, idle_timeout=300)

    async def body():
        browser, _server_side = await open_console(stack, vnc)
        sent = 0
        for message in [KEY_DOWN, POINTER] * 5:
            clock.advance(200)
            browser.sendMessage(message, isBinary=True)
            sent += len(message)
            await vnc.received_at_least(sent)
        clock.advance(200)
        assert stack.factory.consoles and not browser.closed.called
        assert browser.notices == []
        clock.advance(100)
        _, code, _ = await browser.closed
        assert code == closecodes.IDLE_TIMEOUT

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_session_cap_closes_a_busy_console(vnc):
    """--max-session closes a console with 4003 even while it has input."""
    clock = Clock()
    stack = make_stack(clock, max_session=3600)

    async def body():
        browser, _ = await open_console(stack, vnc)
        notice = browser.next_notice()
        clock.advance(3540)
        assert await notice == {"type": "session-warning", "seconds": 60}
        browser.sendMessage(KEY_DOWN, isBinary=True)
        await vnc.received_at_least(len(KEY_DOWN))
        clock.advance(60)
        _, code, reason = await browser.closed
        assert code == closecodes.MAX_SESSION
        assert reason == closecodes.REASONS[closecodes.MAX_SESSION]

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_session_ends_when_its_token_expires(vnc):
    """
    --end-at-token-expiry yes (nova's enforce_session_timeout): a console
    closes with 4003 when the token that opened it expires, warned a
    minute before; a --max-session that comes sooner still wins.
    """
    clock = Clock()
    # The harness's token API dates its tokens by the real clock.
    clock.advance(reactor.seconds())
    stack = make_stack(clock, end_at_token_expiry=True, max_session=3600)

    async def body():
        token = await stack.mint(vnc.address.port, ttl=600)
        browser, _ = await open_console(stack, vnc, token)
        notice = browser.next_notice()
        clock.advance(540)
        assert await notice == {"type": "session-warning", "seconds": 60}
        clock.advance(60)
        _, code, _ = await browser.closed
        assert code == closecodes.MAX_SESSION
        long_lived = await stack.mint(vnc.address.port, ttl=7200)
        browser, _ = await open_console(stack, vnc, long_lived)
        clock.advance(3599)
        assert not browser.closed.called
        clock.advance(1)
        _, code, _ = await browser.closed
        assert code == closecodes.MAX_SESSION

    await with_stack(stack, body)


def test_session_cap():
    expires = "2026-01-01T00:10:00Z"
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert session_cap(Limits(max_session=60), expires, now) == 60
    assert session_cap(Limits(end_at_token_expiry=True), expires, now) == 600
    capped = Limits(end_at_token_expiry=True, max_session=60)
    assert session_cap(capped, expires, now) == 60
    assert session_cap(Limits(end_at_token_expiry=True), expires, now + 900) == 0.001
    assert session_cap(Limits(end_at_token_expiry=True), "", now) == 0


@pytest_twisted.ensureDeferred
async def test_real_time_idle_and_session_limits(vnc):
    """On the real clock, a 1s idle timeout closes with 4002 and a 1s session cap with 4003."""
    stack = make_stack(idle_timeout=1.0)

    async def body():
        browser, _ = await open_console(stack, vnc)
        _, code, _ = await browser.closed
        assert code == closecodes.IDLE_TIMEOUT
        # Warned at once: the timeout is shorter than the warning lead.
        assert browser.notices == [{"type": "idle-warning", "seconds": 1}]

    await with_stack(stack, body)

    stack = make_stack(max_session=1.0)

    async def body2():
        browser, _ = await open_console(stack, vnc, notices=False)
        _, code, _ = await browser.closed
        assert code == closecodes.MAX_SESSION
        # Without ?notices=1 no text message is sent.
        assert browser.notices == []

    await with_stack(stack, body2)


@pytest_twisted.ensureDeferred
async def test_max_connections(vnc):
    """Over --max-connections a console is closed with 1013 and a reason; a freed slot is reused."""
    stack = make_stack(max_connections=2)

    async def body():
        first, _ = await open_console(stack, vnc)
        _second, _ = await open_console(stack, vnc)
        token = await stack.mint(vnc.address.port)
        third = await stack.open_browser(f"token={token}")
        await third.opened
        _, code, reason = await third.closed
        assert code == closecodes.TRY_AGAIN_LATER
        assert reason == closecodes.REASONS[closecodes.TRY_AGAIN_LATER]
        assert len(vnc.connections) == 2
        first.sendClose(1000)
        await first.closed
        _fourth, _ = await open_console(stack, vnc, token=token)
        assert len(stack.factory.consoles) == 2
        assert stack.factory.counter.total == 2

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_max_connections_per_token(vnc):
    """A second console with the same token gets 4004; other tokens still open."""
    stack = make_stack(max_connections_per_token=1)

    async def body():
        token = await stack.mint(vnc.address.port)
        await open_console(stack, vnc, token=token)
        again = await stack.open_browser(f"token={token}")
        await again.opened
        _, code, reason = await again.closed
        assert code == closecodes.TOO_MANY_FOR_TOKEN
        assert reason == closecodes.REASONS[closecodes.TOO_MANY_FOR_TOKEN]
        await open_console(stack, vnc)
        assert len(vnc.connections) == 2

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_message_too_big(vnc):
    """A message over --max-message-size closes the console with 1009; nothing of it reaches VNC."""
    stack = make_stack(max_message_size=1024)

    async def body():
        browser, server_side = await open_console(stack, vnc)
        browser.sendMessage(b"\x04" * 1000, isBinary=True)
        await vnc.received_at_least(1000)
        browser.sendMessage(b"\x04" * 2048, isBinary=True)
        _, code, _ = await browser.closed
        assert code == closecodes.MESSAGE_TOO_BIG
        await server_side.lost
        assert server_side.received == 1000

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_keepalive_pings_a_healthy_browser(vnc):
    """A quiet console is pinged every interval and stays open while pongs come back."""
    # Autobahn's timers run in whole seconds.
    stack = make_stack(keepalive_interval=1, keepalive_timeout=1)

    async def body():
        browser, _ = await open_console(stack, vnc)
        for _ in range(2):
            await browser.next_ping()
        assert stack.factory.consoles and not browser.closed.called

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_keepalive_notices_tell_the_page_the_path_is_alive(vnc):
    """A page that asked for notices hears the keepalive interval at open and a notice after each answered ping; a page that did not ask hears none."""
    stack = make_stack(keepalive_interval=1, keepalive_timeout=1)

    async def body():
        browser, _ = await open_console(stack, vnc)
        quiet, _ = await open_console(stack, vnc, notices=False)
        while len(browser.keepalives) < 3:
            await browser.next_keepalive()
        assert browser.keepalives[0] == {"type": "keepalive", "seconds": 1}
        assert browser.keepalives[1:] == [{"type": "keepalive"}] * (len(browser.keepalives) - 1)
        assert browser.notices == []
        await quiet.next_ping()
        assert quiet.keepalives == [] and quiet.notices == []
        # The token's policy comes once, at open, to the page that asked.
        assert browser.policies == [
            {"type": "policy", "view_only": False, "clipboard": "both"}
        ]
        assert quiet.policies == []

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_no_keepalive_no_keepalive_notices(vnc):
    """With --keepalive-interval 0 the page is told nothing, so it never takes a quiet console for dead."""
    stack = make_stack(keepalive_interval=0)

    async def body():
        browser, _ = await open_console(stack, vnc)
        browser.sendMessage(KEY_DOWN, isBinary=True)
        await vnc.received_at_least(len(KEY_DOWN))
        assert browser.keepalives == [] and browser.notices == []

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_keepalive_drops_a_dead_browser(vnc):
    """A browser that stops answering pings is dropped and its VNC connection closed."""
    stack = make_stack(keepalive_interval=1, keepalive_timeout=1)

    async def body():
        browser, server_side = await open_console(stack, vnc)
        console = only_console(stack)
        browser.transport.pauseProducing()  # reads nothing: no pongs
        await stack.factory.when_idle()
        await server_side.lost
        assert console.outcome == "keepalive_timeout"
        browser.transport.abortConnection()

    await with_stack(stack, body)


class Silent(Protocol):
    """
    A raw TCP client that sends what it is told and notes when it is cut off.
    """

    def __init__(self):
        self.lost = Deferred()
        self.received = b""

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason=None):
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_slowloris_is_dropped_on_a_real_socket():
    """A client that never finishes its request headers is cut off after the handshake timeout."""
    stack = make_stack(handshake_timeout=0.5)

    async def body():
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", stack.port)
        client = await connectProtocol(endpoint, Silent())
        client.transport.write(b"GET /websockify?token=x HTTP/1.1\r\nHost: a\r\n")
        await client.lost
        assert client.received.startswith(b"HTTP/1.1 408 ")

    await with_stack(stack, body)


@pytest_twisted.ensureDeferred
async def test_slow_token_check_hits_the_handshake_timeout(vnc):
    """A token check slower than the handshake timeout drops the upgrade."""
    stack = make_stack(handshake_timeout=1)
    stalled = Deferred()

    async def never(token):
        await stalled
        return None

    stack.auth.use_token = never

    async def body():
        browser = await stack.open_browser("token=abc")
        with pytest.raises(ConnectionError):
            await browser.opened
        stalled.callback(None)
        assert vnc.connections == []
        assert stack.factory.counter.total == 0

    await with_stack(stack, body)
