"""
The descriptor budget: the default C{--max-connections} from the open-files
limit, the count of the proxy's connections against it, and the cap on one
client address's connections without a console; pure, then in memory
through the proxy's real site.
"""

from __future__ import annotations

import ipaddress
import json

import pytest_twisted
from twisted.internet.protocol import Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txvnc.proxy.capacity import (
    RESERVE,
    ConnectionBudget,
    Slot,
    default_max_connections,
    descriptor_capacity,
)
from txvnc.proxy.limits import ConnectionCounter, Limits

from .harness import LogCapture
from .memory import MemoryProxy, RawUpgrade


def test_default_max_connections_fits_the_open_files_limit():
    """Three descriptors a console, a quarter of the rest kept for pages, after the reserve; no limit without a limit."""
    assert descriptor_capacity(256) == 256 - RESERVE
    assert default_max_connections(256) == (256 - RESERVE - 64) // 2
    assert 2 * default_max_connections(1024) < 1024 - RESERVE
    # The hard limit here: one process holds 9,000 consoles (the benchmark).
    assert default_max_connections(20000) >= 9000
    assert default_max_connections(None) == 0
    assert default_max_connections(10) >= 1


def test_budget_counts_connections_and_consoles():
    """A console holds one descriptor beyond its browser's (its VNC server's); past the capacity a connection is refused, and a release makes room."""
    counter = ConnectionCounter()
    budget = ConnectionBudget(10, 0, counter)
    slots = [budget.take("192.0.2.1") for _ in range(4)]
    assert all(isinstance(s, Slot) for s in slots)
    for _ in range(6):
        counter.enter()
    assert budget.in_use == 4 + 6
    assert isinstance(budget.take("192.0.2.1"), str)
    counter.leave()
    counter.leave()
    assert isinstance(budget.take("192.0.2.1"), Slot)
    assert isinstance(budget.take("192.0.2.1"), Slot)
    assert isinstance(budget.take("192.0.2.1"), str)
    slots[0].release()
    slots[0].release()  # once only
    assert budget.open == 5


def test_connections_without_a_console_are_capped_per_address():
    """One address may hold per_address connections without a console; an admitted one stops counting; IPv6 per /64; loopback and trusted proxies are not capped."""
    budget = ConnectionBudget(
        0, 2, ConnectionCounter(), exempt=(ipaddress.ip_network("198.51.100.0/24"),)
    )
    a, b = budget.take("192.0.2.1"), budget.take("192.0.2.1")
    assert isinstance(a, Slot) and isinstance(b, Slot)
    assert "without a console" in budget.take("192.0.2.1")
    assert isinstance(budget.take("192.0.2.2"), Slot)
    a.admitted()
    assert isinstance(budget.take("192.0.2.1"), Slot)
    budget.take("2001:db8::1")
    budget.take("2001:db8::2")
    assert isinstance(budget.take("2001:db8::3"), str)
    assert isinstance(budget.take("2001:db8:1::1"), Slot)
    assert all(isinstance(budget.take("127.0.0.1"), Slot) for _ in range(10))
    assert all(isinstance(budget.take("198.51.100.7"), Slot) for _ in range(10))


@pytest_twisted.ensureDeferred
async def test_over_the_per_address_cap_a_connection_gets_503_in_memory():
    """Through the real site: a third idle connection from one address is answered 503; once one of its consoles is open it no longer counts, and closing frees the rest."""
    proxy = MemoryProxy(limits=Limits(keepalive_interval=0, max_pending_per_address=2))
    token = await proxy.mint()
    peer = "192.0.2.7"
    idle = [proxy._connect(Protocol(), peer), proxy._connect(Protocol(), peer)]
    refused = RawUpgrade(f"/websockify?token={token}", {"Origin": "http://proxy.test"})
    proxy._connect(refused, peer)
    assert refused.status == (503, "Service Unavailable")
    assert proxy.factory.budget.pending(peer) == 2
    # Another address is not affected, and its console stops counting.
    other = RawUpgrade(f"/websockify?token={token}", {"Origin": "http://proxy.test"})
    proxy._connect(other, "192.0.2.8")
    assert other.status[0] == 101
    assert proxy.factory.budget.pending("192.0.2.8") == 0
    idle[0].client.transport.loseConnection()
    proxy.flush()
    assert proxy.factory.budget.pending(peer) == 1
    again = RawUpgrade(f"/websockify?token={token}", {"Origin": "http://proxy.test"})
    proxy._connect(again, peer)
    assert again.status[0] == 101
    assert proxy.factory.budget.pending(peer) == 1


@pytest_twisted.ensureDeferred
async def test_over_the_descriptor_budget_a_connection_gets_503_in_memory():
    """With the budget full, a page request is answered 503 at once; the consoles already open are untouched."""
    proxy = MemoryProxy(limits=Limits(keepalive_interval=0, descriptors=3))
    token = await proxy.mint()
    browser = proxy.browser(f"token={token}")  # its socket and its VNC server's
    assert browser.opened.called
    proxy._connect(Protocol())  # the third
    page = RawUpgrade("/vnc_auto.html", {})
    proxy._connect(page)
    assert page.status == (503, "Service Unavailable")
    assert proxy.factory.counter.total == 1


class HeldAPI(Resource):
    """A token API that answers nothing until the test says what."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def render(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_a_browser_gone_during_its_token_check_leaves_nothing_behind():
    """A browser that leaves while its token is checked is not opened when the check comes back valid: no VNC connection, no console counted, no descriptor held (Autobahn opens the WebSocket even after the connection is lost)."""
    api = HeldAPI()
    proxy = MemoryProxy(api=api)
    with LogCapture() as log:
        upgrade = RawUpgrade("/websockify?token=some-token", {"Origin": "http://proxy.test"})
        pump = proxy._connect(upgrade, "192.0.2.9")
        assert len(api.requests) == 1 and upgrade.answer == b""
        pump.client.transport.loseConnection()
        proxy.flush()
        (request,) = api.requests
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps({
            "host": "10.0.0.5", "port": 5900, "instance_uuid": "inst-1",
            "console_type": "novnc", "expires_at": "2030-01-01T00:00:00Z",
        }).encode())  # fmt: skip
        request.finish()
        proxy.flush()
    assert proxy.vnc.servers == []
    assert not proxy.factory.consoles
    assert proxy.factory.counter.total == 0
    assert proxy.factory.budget.open == 0
    assert proxy.factory.budget.pending("192.0.2.9") == 0
    assert not [line for line in log.lines() if "unexpected error" in line]
