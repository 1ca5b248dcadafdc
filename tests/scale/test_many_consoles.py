"""
Correctness under load: a thousand consoles open at once through one proxy,
every byte arriving intact both ways.
"""

from __future__ import annotations

import hashlib
import os
import resource

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol

from tests.proxy.harness import Stack

pytestmark = pytest.mark.scale

CONSOLES = 1000
EACH_WAY = 48 * 1024


@pytest.fixture
def many_files():
    """Room for four sockets per console in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = CONSOLES * 4 + 500
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail(f"open-files hard limit {hard} is below the {need} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def stack():
    s = Stack()
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


class TaggedVNC(Protocol):
    """
    A VNC server connection that learns which console it serves from a
    4-byte tag the browser sends first, then sends that console's download
    and hashes its upload.
    """

    def connectionMade(self) -> None:
        self.head = b""
        self.index: int | None = None
        self.received = 0
        self.sha = hashlib.sha256()

    def dataReceived(self, data: bytes) -> None:
        if self.index is None:
            self.head += data
            if len(self.head) < 4:
                return
            self.index, data = int.from_bytes(self.head[:4], "big"), self.head[4:]
            self.factory.sides[self.index] = self
            self.transport.write(self.factory.downloads[self.index])
        self.received += len(data)
        self.sha.update(data)
        if self.received >= EACH_WAY:
            self.factory.done[self.index].callback(self.sha.hexdigest())


@pytest.fixture
def vnc():
    factory = Factory.forProtocol(TaggedVNC)
    factory.noisy = False
    factory.downloads = [os.urandom(EACH_WAY) for _ in range(CONSOLES)]
    factory.uploads = [os.urandom(EACH_WAY) for _ in range(CONSOLES)]
    factory.done = [Deferred() for _ in range(CONSOLES)]
    factory.sides = {}
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    factory.port = port.getHost().port
    yield factory
    for side in factory.sides.values():
        side.transport.abortConnection()
    pytest_twisted.blockon(port.stopListening())


@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_a_thousand_consoles_at_once_all_bytes_intact(many_files, stack, vnc):
    """1,000 consoles open together and each carries its own 48 KiB both ways unchanged."""
    tokens = [await stack.mint(vnc.port) for _ in range(CONSOLES)]
    browsers = []
    # Opened 100 at a time (this one process plays browsers, proxy, token
    # API and VNC servers), then all held open and used together.
    for batch in range(0, CONSOLES, 100):
        opening = [
            Deferred.fromCoroutine(stack.open_browser(f"token={t}"))
            for t in tokens[batch : batch + 100]
        ]
        batch_browsers = await gatherResults(opening)
        await gatherResults([b.opened for b in batch_browsers])
        browsers.extend(batch_browsers)
    assert len(stack.factory.consoles) == CONSOLES

    for i, browser in enumerate(browsers):
        browser.sendMessage(i.to_bytes(4, "big"), isBinary=True)
        up = vnc.uploads[i]
        for offset in range(0, EACH_WAY, 16384):
            browser.sendMessage(up[offset : offset + 16384], isBinary=True)

    uploaded = await gatherResults(vnc.done)
    await gatherResults([b.received_at_least(EACH_WAY) for b in browsers])
    for i, browser in enumerate(browsers):
        assert uploaded[i] == hashlib.sha256(vnc.uploads[i]).hexdigest(), i
        assert vnc.sides[i].received == EACH_WAY, i
        assert browser.received == EACH_WAY, i
        assert browser.sha.hexdigest() == hashlib.sha256(vnc.downloads[i]).hexdigest(), i
    all_closed = stack.factory.when_idle()
    for browser in browsers:
        browser.sendClose()
    await gatherResults([b.closed for b in browsers])
    # The proxy's side of each console finishes closing after the browser's.
    await all_closed
    assert not stack.factory.consoles
