"""
Per-token policy through the real proxy over real sockets, against a small
scripted RFB 3.8 server: view-only, the shared flag, clipboard direction,
limits, and that tokens without RFB options are relayed untouched.
"""

from __future__ import annotations

import struct

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from tests.rfb.rfbclient import RFBBrowser, handshake
from tests.support.fakevnc import FakeVNCServer
from txvnc.proxy.security import RFBConfig
from txvnc.rfb.client_messages import Limits

from .harness import KEY as API_KEY
from .harness import Stack

KEY = struct.pack("!BBxxI", 4, 1, 0x61)
POINTER = struct.pack("!BBHH", 5, 1, 10, 20)
UPDATE_REQUEST = struct.pack("!BBHHHH", 3, 1, 0, 0, 64, 48)
SERVER_INIT = struct.pack("!HH16sI", 64, 48, b"\x20\x18\x00\x01" + bytes(12), 4) + b"fake"


def cut(text: bytes, kind: int) -> bytes:
    return struct.pack("!BxxxI", kind, len(text)) + text


class FakeRFBServer(Protocol):
    """
    RFB 3.8 with security None; records the ClientInit flag and everything
    after it.
    """

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.buffer = b""
        self.stage = "version"
        self.shared: int | None = None
        self.after_init = b""
        self.waiters: list[tuple[int, Deferred[None]]] = []
        self.transport.write(b"RFB 003.008\n")

    def dataReceived(self, data: bytes) -> None:
        if self.stage == "relay":
            self.after_init += data
            for waiter in list(self.waiters):
                if len(self.after_init) >= waiter[0]:
                    self.waiters.remove(waiter)
                    waiter[1].callback(None)
            return
        self.buffer += data
        if self.stage == "version" and len(self.buffer) >= 12:
            self.buffer = self.buffer[12:]
            self.stage = "security"
            self.transport.write(b"\x01\x01")
        if self.stage == "security" and len(self.buffer) >= 1:
            self.buffer = self.buffer[1:]
            self.stage = "init"
            self.transport.write(b"\0\0\0\0")
        if self.stage == "init" and len(self.buffer) >= 1:
            self.shared = self.buffer[0]
            rest, self.buffer = self.buffer[1:], b""
            self.stage = "relay"
            self.transport.write(SERVER_INIT)
            if rest:
                self.dataReceived(rest)

    def received(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.after_init) >= count:
            d.callback(None)
        else:
            self.waiters.append((count, d))
        return d


@pytest.fixture
def server():
    factory = Factory.forProtocol(FakeRFBServer)
    factory.connections = []
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    factory.port = port.getHost().port
    yield factory
    for connection in factory.connections:
        connection.transport.abortConnection()
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def stack():
    s = Stack(rfb=RFBConfig(limits=Limits(max_cut_text=1000)))
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


async def open_console(stack: Stack, server, **options: object) -> RFBBrowser:
    token = await stack.mint(server.port, **options)
    browser = await stack.open_browser(f"token={token}", protocol=RFBBrowser)
    await browser.opened
    return browser


@pytest_twisted.ensureDeferred
async def test_view_only_drops_key_and_pointer(stack, server) -> None:
    """A view-only console forwards update requests and never keys or pointer moves."""
    browser = await open_console(stack, server, view_only=True)
    await handshake(browser)
    browser.send(KEY + POINTER + UPDATE_REQUEST + KEY + UPDATE_REQUEST)
    vnc = server.connections[0]
    await vnc.received(2 * len(UPDATE_REQUEST))
    assert vnc.after_init == UPDATE_REQUEST + UPDATE_REQUEST


@pytest_twisted.ensureDeferred
async def test_input_passes_without_view_only(stack, server) -> None:
    """With a policy that allows input, keys and pointer reach the server byte for byte."""
    browser = await open_console(stack, server, clipboard="both")
    await handshake(browser)
    stream = KEY + POINTER + UPDATE_REQUEST
    browser.send(stream)
    vnc = server.connections[0]
    await vnc.received(len(stream))
    assert vnc.after_init == stream


@pytest.mark.parametrize("shared,flag", [(False, 0), (True, 1)])
@pytest_twisted.ensureDeferred
async def test_token_sets_the_shared_flag(stack, server, shared, flag) -> None:
    """The ClientInit shared flag is the token's, whatever the browser asks."""
    browser = await open_console(stack, server, shared=shared)
    await handshake(browser, shared=not shared)
    assert server.connections[0].shared == flag


@pytest_twisted.ensureDeferred
async def test_clipboard_from_vm_is_dropped_when_only_to_vm(stack, server) -> None:
    """With clipboard to_vm, the server's cut text never reaches the browser; other messages do."""
    browser = await open_console(stack, server, clipboard="to_vm")
    await handshake(browser)
    server.connections[0].transport.write(cut(b"vm secret", 3) + b"\x02")
    assert await browser.read(1) == b"\x02"
    browser.send(cut(b"to the vm", 6))
    await server.connections[0].received(8 + 9)
    assert server.connections[0].after_init == cut(b"to the vm", 6)


@pytest_twisted.ensureDeferred
async def test_clipboard_none_blocks_both_ways(stack, server) -> None:
    """With clipboard none, cut text is dropped in both directions."""
    browser = await open_console(stack, server, clipboard="none")
    await handshake(browser)
    server.connections[0].transport.write(cut(b"vm secret", 3) + b"\x02")
    assert await browser.read(1) == b"\x02"
    browser.send(cut(b"paste", 6) + UPDATE_REQUEST)
    await server.connections[0].received(len(UPDATE_REQUEST))
    assert server.connections[0].after_init == UPDATE_REQUEST


@pytest_twisted.ensureDeferred
async def test_oversized_clipboard_closes_with_a_reason(stack, server) -> None:
    """ClientCutText over the proxy's limit closes the console with 4005 and says why."""
    browser = await open_console(stack, server, clipboard="both")
    await handshake(browser)
    browser.send(struct.pack("!BxxxI", 6, 5000))
    _, code, reason = await browser.closed
    assert (code, reason) == (4005, "clipboard text of 5000 bytes (limit 1000)")


@pytest_twisted.ensureDeferred
async def test_unknown_message_closes_with_a_reason(stack, server) -> None:
    """A message type the proxy cannot frame closes the console with 4005."""
    browser = await open_console(stack, server, view_only=True)
    await handshake(browser)
    browser.send(b"\x63")
    _, code, reason = await browser.closed
    assert (code, reason) == (4005, "the browser sent an unknown RFB message (type 99)")


@pytest_twisted.ensureDeferred
async def test_tokens_without_options_are_relayed_untouched(stack, server) -> None:
    """A token with no RFB options gets the plain relay: the server's version reaches the browser as is."""
    token = await stack.mint(server.port)
    browser = await stack.open_browser(f"token={token}", protocol=RFBBrowser)
    await browser.opened
    assert await browser.read(12) == b"RFB 003.008\n"
    browser.send(b"RFB 003.008\n")
    # The server's own list, not the proxy's: the plain relay is in use.
    assert await browser.read(2) == b"\x01\x01"
    assert not any(c.relay.secured for c in stack.factory.consoles)


@pytest_twisted.ensureDeferred
async def test_unix_path_outside_allowed_dirs_is_refused_at_mint(stack) -> None:
    """The token API refuses a unix socket outside --allowed-unix-dir."""
    response = await treq.post(
        stack.api_url + "/v1/tokens",
        json={"unix_path": "/etc/passwd"},
        headers={"Authorization": "Bearer " + API_KEY},
    )
    assert response.code == 403
    assert (await response.json()) == {"error": "unix_path is not under an allowed directory"}


@pytest_twisted.ensureDeferred
async def test_silent_server_times_out_with_a_reason() -> None:
    """A VNC server that accepts but never speaks RFB closes the console with 4005 after the handshake timeout."""
    silent = FakeVNCServer()
    stack = Stack(rfb=RFBConfig(handshake_timeout=0.5))
    try:
        token = await stack.mint(silent.address.port, security="none")
        browser = await stack.open_browser(f"token={token}", protocol=RFBBrowser)
        _, code, reason = await browser.closed
        assert (code, reason) == (4005, "the VNC server did not complete the RFB handshake within 0.5s")
    finally:
        await stack.stop()
        await silent.stop()


@pytest_twisted.ensureDeferred
async def test_wrong_security_from_a_plain_relay_server(stack, server) -> None:
    """A token asking for VNC authentication against a None-only server says what the server offers."""
    browser = await open_console(stack, server, security="vnc", vnc_password="pw")
    _, code, reason = await browser.closed
    assert (code, reason) == (4005, "VNC server requires security type None, allowed: VNC Authentication")


@pytest_twisted.ensureDeferred
async def test_browser_bytes_before_the_handshake_are_bounded() -> None:
    """A browser that floods before it has been greeted is closed with 4005, not buffered."""
    silent = FakeVNCServer()
    stack = Stack()
    try:
        token = await stack.mint(silent.address.port, security="none")
        browser = await stack.open_browser(f"token={token}", protocol=RFBBrowser)
        await browser.opened
        browser.send(b"x" * 5000)
        _, code, reason = await browser.closed
        assert (code, reason) == (4005, "the browser sent data before the console was ready")
    finally:
        await stack.stop()
        await silent.stop()
