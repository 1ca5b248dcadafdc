"""
The relay over real loopback sockets: what reaches the VNC server, what is
refused before it, and how the proxy behaves when one side is slow.
"""

from urllib.parse import quote

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol

from txvnc.core.audit import AuditLog
from txvnc.proxy.admission import INVALID_TOKEN

from .harness import Connector, LogCapture, Stack, random_block

MiB = 1024 * 1024


@pytest.fixture
def stack():
    s = Stack()
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


def after(seconds):
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@pytest.mark.timeout(240)
@pytest_twisted.ensureDeferred
async def test_64_mib_each_way_arrive_intact(stack, vnc):
    """64 MiB from the VNC server and 64 MiB from the browser arrive unchanged."""
    total = 64 * MiB
    block = random_block()
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    server_side = await connected

    download = server_side.stream(block, total)
    upload_sha = __import__("hashlib").sha256()
    view = memoryview(block)
    sent = 0
    while sent < total:
        size = min(65536, total - sent)
        offset = sent % len(block)
        size = min(size, len(block) - offset)
        piece = view[offset : offset + size].tobytes()
        upload_sha.update(piece)
        browser.sendMessage(piece, isBinary=True)
        sent += size
        if sent % (8 * MiB) < 65536:
            # Let the reactor drain the browser's buffer now and then.
            await after(0)

    download_sha = await download.done
    await browser.received_at_least(total)
    await vnc.received_at_least(total)
    assert browser.received == total
    assert browser.sha.hexdigest() == download_sha
    assert server_side.received == total
    assert server_side.sha.hexdigest() == upload_sha.hexdigest()
    assert browser.text_messages == 0

    (console,) = stack.factory.consoles
    assert console.bytes_from_vnc == total
    assert console.bytes_to_vnc == total

    browser.sendClose(1000)
    wasClean, code, _ = await browser.closed
    assert (wasClean, code) == (True, 1000)
    await server_side.lost
    assert not stack.factory.consoles


@pytest.mark.parametrize(
    "form",
    ["query", "path", "path-websockify", "cookie"],
)
@pytest_twisted.ensureDeferred
async def test_token_forms_reach_the_vnc_server(stack, vnc, form):
    """Each place a token can be carried opens the console."""
    token = await stack.mint(vnc.address.port)
    query, headers = {
        "query": (f"token={token}", None),
        "path": ("path=" + quote(f"?token={token}", safe=""), None),
        "path-websockify": (
            "path=" + quote(f"websockify?token={token}", safe=""),
            None,
        ),
        "cookie": ("", {"Cookie": f"token={token}"}),
    }[form]
    connected = vnc.next_connection()
    browser = await stack.open_browser(query, headers=headers)
    await browser.opened
    server_side = await connected
    server_side.transport.write(b"RFB 003.008\n")
    await browser.received_at_least(12)
    browser.sendMessage(b"RFB 003.008\n", isBinary=True)
    await vnc.received_at_least(12)
    browser.sendClose(1000)
    await server_side.lost


@pytest_twisted.ensureDeferred
async def test_upgrade_on_root_path_works(stack, vnc):
    """noVNC's own pages connect to / and are served the same relay."""
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}", path="/")
    await browser.opened
    await connected
    browser.sendClose(1000)
    await browser.closed


async def refused(stack, vnc, query, status, reason, origin="same", headers=None):
    code, phrase = await stack.raw_upgrade(query, origin=origin, headers=headers)
    assert (code, phrase) == (status, reason)
    assert vnc.connections == []


@pytest_twisted.ensureDeferred
async def test_wrong_token_is_refused(stack, vnc):
    """An unknown token is refused with 403 before the VNC server hears of it."""
    await refused(stack, vnc, "token=not-a-real-token", 403, INVALID_TOKEN)


@pytest_twisted.ensureDeferred
async def test_missing_token_is_refused(stack, vnc):
    """A request with no token at all gets the same 403."""
    await refused(stack, vnc, "", 403, INVALID_TOKEN)


@pytest_twisted.ensureDeferred
async def test_expired_token_is_refused(stack, vnc):
    """An expired token is refused like an unknown one."""
    token = await stack.mint(vnc.address.port, ttl=1)
    # Token expiry is reactor time here; the API's clock is the reactor.
    await after(1.05)
    await refused(stack, vnc, f"token={token}", 403, INVALID_TOKEN)


@pytest_twisted.ensureDeferred
async def test_revoked_token_is_refused(stack, vnc):
    """A revoked token is refused."""
    token = await stack.mint(vnc.address.port)
    await stack.auth.revoke_token(token)
    await refused(stack, vnc, f"token={token}", 403, INVALID_TOKEN)


@pytest_twisted.ensureDeferred
async def test_revoked_instance_is_refused(stack, vnc):
    """Revoking the instance refuses its tokens."""
    token = await stack.mint(vnc.address.port, instance="inst-7")
    await stack.auth.revoke_instance("inst-7")
    await refused(stack, vnc, f"token={token}", 403, INVALID_TOKEN)


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://127.0.0.1:1"]
)
@pytest_twisted.ensureDeferred
async def test_bad_origin_is_refused_before_token_check(stack, vnc, origin):
    """A foreign Origin gets 403 even with a valid token, before any lookup."""
    token = await stack.mint(vnc.address.port)
    checks = []
    real_use = stack.auth.use_token
    stack.auth.use_token = lambda t: checks.append(t) or real_use(t)
    await refused(stack, vnc, f"token={token}", 403, "Origin not allowed", origin)
    assert checks == []


@pytest_twisted.ensureDeferred
async def test_allowed_origin_is_accepted(vnc):
    """An origin listed with --allowed-origin may open consoles."""
    stack = Stack(allowed_origins=("https://horizon.example",))
    try:
        await _open_from_horizon(stack, vnc)
    finally:
        await stack.stop()


async def _open_from_horizon(stack, vnc):
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(
        f"token={token}", origin="https://horizon.example"
    )
    await browser.opened
    await connected
    browser.sendClose(1000)
    await browser.closed


@pytest_twisted.ensureDeferred
async def test_token_api_down_is_503(stack, vnc):
    """When the token API is unreachable the handshake gets 503."""
    token = await stack.mint(vnc.address.port)
    await stack.api_port.stopListening()
    await stack.http._agent._pool.closeCachedConnections()
    await refused(
        stack, vnc, f"token={token}", 503, "Console authentication is unavailable"
    )


@pytest_twisted.ensureDeferred
async def test_proxy_with_wrong_key_is_503(stack, vnc):
    """A proxy whose API key the token API refuses answers 503, not 500."""
    token = await stack.mint(vnc.address.port)
    stack.auth._api_key = "not-the-key"
    await refused(
        stack, vnc, f"token={token}", 503, "Console authentication is unavailable"
    )


class Mute(Protocol):
    """Accepts HTTP requests and never answers."""


@pytest_twisted.ensureDeferred
async def test_token_api_timeout_is_503(vnc):
    """A token API that does not answer in time gets the handshake a 503."""
    mute = reactor.listenTCP(0, Factory.forProtocol(Mute), interface="127.0.0.1")
    stack = Stack(auth_timeout=0.5)
    stack.auth.base_url = f"http://127.0.0.1:{mute.getHost().port}"
    try:
        await refused(
            stack, vnc, "token=whatever", 503, "Console authentication is unavailable"
        )
    finally:
        await stack.stop()
        await mute.stopListening()


@pytest_twisted.ensureDeferred
async def test_vnc_target_down_closes_1011(stack):
    """A token whose VNC server is gone opens, then closes with 1011 and why."""
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    dead = port.getHost().port
    await port.stopListening()
    token = await stack.mint(dead)
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    _, code, reason = await browser.closed
    assert code == 1011
    assert "cannot reach its VNC server" in reason
    assert not stack.factory.consoles


@pytest_twisted.ensureDeferred
async def test_dropping_a_console_cancels_its_pending_vnc_connect(vnc):
    """A console dropped while its VNC connect is pending cancels the connect."""
    cancelled = Deferred()
    pending = Deferred(lambda d: cancelled.callback(None))
    stack = Stack(connector=Connector(lambda info, protocol: pending))
    try:
        token = await stack.mint(vnc.address.port)
        browser = await stack.open_browser(f"token={token}")
        await browser.opened
        (console,) = stack.factory.consoles
        console.transport.abortConnection()  # e.g. the service shutting down
        await cancelled
        await browser.closed
        assert not stack.factory.consoles
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_vnc_server_closing_closes_the_browser(stack, vnc):
    """When the VNC server hangs up, the browser gets a clean close."""
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    server_side = await connected
    server_side.transport.write(b"bye")
    server_side.transport.loseConnection()
    wasClean, code, reason = await browser.closed
    assert browser.received == 3
    assert (wasClean, code) == (True, 1000)
    assert reason == "The VNC server closed the console"


@pytest_twisted.ensureDeferred
async def test_vnc_server_reset_is_an_unavailable_console(stack, vnc):
    """A VNC connection that breaks (reset) under an open console closes it with 1011, which the page retries, not 1000, which it takes as the end; the bytes before the reset still arrive."""
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    server_side = await connected
    server_side.transport.write(b"last words")
    await browser.received_at_least(10)
    server_side.transport.abortConnection()
    wasClean, code, reason = await browser.closed
    assert (wasClean, code) == (True, 1011)
    assert (
        reason
        == "The console is unavailable: the connection to its VNC server was lost"
    )


@pytest_twisted.ensureDeferred
async def test_browser_vanishing_closes_the_vnc_side(stack, vnc):
    """When the browser's connection drops, the VNC connection is closed."""
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    server_side = await connected
    browser.transport.abortConnection()
    await server_side.lost
    assert not stack.factory.consoles


@pytest_twisted.ensureDeferred
async def test_text_message_closes_1003(stack, vnc):
    """A text message on a binary console closes it with 1003; nothing relayed."""
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    server_side = await connected
    browser.sendMessage(b"hello", isBinary=False)
    _, code, _ = await browser.closed
    await server_side.lost
    assert code == 1003
    assert server_side.received == 0


def proxy_buffered(console):
    """Bytes the proxy holds in its two transports' write buffers."""
    total = 0
    for transport in (console.transport, console.relay.vnc_transport):
        if transport is not None:
            total += len(transport.dataBuffer) + transport._tempDataLen
    return total


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_slow_browser_throttles_the_vnc_server(stack, vnc):
    """A browser that stops reading stops the VNC server's stream; nothing is lost."""
    total = 512 * MiB
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    server_side = await connected
    (console,) = stack.factory.consoles

    browser.transport.pauseProducing()  # the browser stops reading
    stream = server_side.stream(random_block(), total)

    # Sample until the VNC server's progress stalls: the measurement itself.
    peak_buffered = 0
    last = -1
    stalled_for = 0
    while stalled_for < 5:
        await after(0.1)
        peak_buffered = max(peak_buffered, proxy_buffered(console))
        stalled_for = stalled_for + 1 if stream.sent == last else 0
        last = stream.sent
    assert stream.sent < 64 * MiB, f"VNC server sent {stream.sent} bytes unthrottled"
    assert peak_buffered < 2 * MiB, f"proxy buffered {peak_buffered} bytes"
    print(
        f"\nthrottled after {stream.sent / MiB:.1f} MiB; "
        f"proxy buffers peaked at {peak_buffered / 1024:.0f} KiB"
    )

    # Stop the stream where it is; the browser reads again and gets it all.
    server_side.transport.unregisterProducer()
    browser.transport.resumeProducing()
    sent = stream.sent
    await browser.received_at_least(sent)
    assert browser.received == sent
    assert browser.sha.hexdigest() == stream.sha.hexdigest()
    browser.sendClose(1000)
    await server_side.lost


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_slow_vnc_server_throttles_the_browser(stack, vnc):
    """A VNC server that stops reading makes the proxy stop reading the browser."""
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    server_side = await connected
    (console,) = stack.factory.consoles
    server_side.transport.pauseProducing()

    chunk = b"\x00" * 65536
    peak_buffered = 0
    for _ in range(2048):  # 128 MiB offered
        browser.sendMessage(chunk, isBinary=True)
        if len(browser.transport.dataBuffer) + browser.transport._tempDataLen > 8 * MiB:
            break
    last = -1
    stalled_for = 0
    while stalled_for < 5:
        await after(0.1)
        peak_buffered = max(peak_buffered, proxy_buffered(console))
        stalled_for = stalled_for + 1 if console.bytes_to_vnc == last else 0
        last = console.bytes_to_vnc
    assert console.bytes_to_vnc < 64 * MiB
    assert peak_buffered < 2 * MiB + 65536 + 14
    server_side.transport.resumeProducing()
    await vnc.received_at_least(console.bytes_to_vnc)
    browser.transport.abortConnection()
    await server_side.lost


class ExplodingAudit(AuditLog):
    """An audit log that fails when a console opens, as a full disk would."""

    def record(self, event, **fields):
        if event == "console.opened":
            raise RuntimeError("audit exploded")


@pytest_twisted.ensureDeferred
async def test_an_error_in_onopen_closes_the_console_1011(vnc):
    """An unexpected exception while a console opens is logged with its traceback and closes the console with 1011, instead of leaving it hanging."""
    stack = Stack(audit=ExplodingAudit(reactor))
    try:
        token = await stack.mint(vnc.address.port)
        with LogCapture() as log:
            browser = await stack.open_browser(f"token={token}")
            await browser.opened
            _, code, reason = await browser.closed.addTimeout(10, reactor)
            await stack.factory.when_idle()
        assert (code, reason) == (1011, "The console is unavailable")
        assert vnc.connections == []
        assert log.failures(RuntimeError) == ["audit exploded"]
        assert stack.factory.counter.total == 0
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_an_error_once_vnc_is_connected_closes_the_console_1011(vnc):
    """An exception in the step that wires a new VNC connection to the browser reaches the console's close path (1011) instead of vanishing into the Deferred."""
    # A "connection" without a transport: wiring the producers raises.
    stack = Stack(connector=Connector(lambda info, protocol: succeed(protocol)))
    try:
        token = await stack.mint(vnc.address.port)
        with LogCapture() as log:
            browser = await stack.open_browser(f"token={token}")
            await browser.opened
            _, code, reason = await browser.closed.addTimeout(10, reactor)
            await stack.factory.when_idle()
        assert (code, reason) == (1011, "The console is unavailable")
        assert log.failures(AttributeError)
        assert stack.factory.counter.total == 0
    finally:
        await stack.stop()
