"""
Prometheus metrics after a scripted sequence of good and bad consoles,
read from a real GET /metrics over loopback.
"""

from __future__ import annotations

import pytest_twisted
import treq
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.server import Site

from tests.proxy.harness import Stack
from tests.support.fakevnc import FakeVNCServer
from txvnc.ops.metrics import MetricsResource, PrometheusConsoleEvents, ProxyCollector
from txvnc.proxy.limits import Limits


class CountingEvents(PrometheusConsoleEvents):
    """
    Prometheus events that also let a test wait for the Nth ended console.
    """

    def __init__(self, registry, clock):
        super().__init__(registry, clock)
        self.ended = 0
        self._waiters = []

    def console_ended(self, outcome, opened):
        super().console_ended(outcome, opened)
        self.ended += 1
        for waiter in list(self._waiters):
            if self.ended >= waiter[0]:
                self._waiters.remove(waiter)
                waiter[1].callback(None)

    def until_ended(self, count):
        d = Deferred()
        if self.ended >= count:
            d.callback(None)
        else:
            self._waiters.append((count, d))
        return d


def samples(text):
    """
    {(name, frozenset(labels)): value} from Prometheus text.
    """
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest_twisted.ensureDeferred
async def test_metrics_after_good_and_bad_consoles(vnc):
    """Open consoles, outcomes, bytes, token checks and API errors add up after a known sequence."""
    registry = CollectorRegistry()
    events = CountingEvents(registry, reactor)
    clock = Clock()
    stack = Stack(limits=Limits(idle_timeout=300), events=events, clock=clock)
    registry.register(ProxyCollector(stack.factory))
    metrics_port = reactor.listenTCP(
        0, Site(MetricsResource(registry)), interface="127.0.0.1"
    )
    try:
        ended = 0

        async def console():
            token = await stack.mint(vnc.address.port)
            connected = vnc.next_connection()
            browser = await stack.open_browser(f"token={token}")
            await browser.opened
            return browser, await connected

        # Two good consoles: one closed by the browser, one by the VNC server.
        a, a_vnc = await console()
        a.sendMessage(b"\x04" * 100, isBinary=True)
        a_vnc.transport.write(b"v" * 200)
        await vnc.received_at_least(100)
        await a.received_at_least(200)
        a.sendClose(1000)
        ended += 1
        await events.until_ended(ended)
        b, b_vnc = await console()
        b_vnc.transport.loseConnection()
        await b.closed
        ended += 1
        await events.until_ended(ended)

        # Refused: bad token, foreign origin, no token.
        for query, origin in [
            ("token=not-a-token", "same"),
            (f"token={await stack.mint(vnc.address.port)}", "https://evil.example"),
            ("", "same"),
        ]:
            code, _ = await stack.raw_upgrade(query, origin=origin)
            assert code == 403
            ended += 1
            await events.until_ended(ended)

        # The VNC server is down.
        down = FakeVNCServer()
        down_port = down.address.port
        await down.stop()
        token = await stack.mint(down_port)
        browser = await stack.open_browser(f"token={token}")
        await browser.opened
        await browser.closed
        ended += 1
        await events.until_ended(ended)

        # Idle.
        c, _ = await console()
        clock.advance(300)
        await c.closed
        ended += 1
        await events.until_ended(ended)

        # One stays open with 101 bytes sent (more than the first console's
        # 100, so the fake server's per-connection count tells them apart).
        d, _ = await console()
        d.sendMessage(b"\x05" * 101, isBinary=True)
        await vnc.received_at_least(101)

        # The token API goes away.
        await stack.api_port.stopListening()
        await stack.http._agent._pool.closeCachedConnections()
        code, _ = await stack.raw_upgrade("token=whatever")
        assert code == 503
        ended += 1
        await events.until_ended(ended)

        response = await treq.get(
            f"http://127.0.0.1:{metrics_port.getHost().port}/metrics", persistent=False
        )
        assert response.code == 200
        assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
        found = samples(await response.text())
    finally:
        await metrics_port.stopListening()
        await stack.stop()

    outcomes = {
        "ok": 2,
        "bad_token": 1,
        "bad_origin": 1,
        "no_token": 1,
        "target_down": 1,
        "idle_timeout": 1,
        "auth_unavailable": 1,
    }
    for outcome, count in outcomes.items():
        assert value(found, "txvnc_consoles_total", outcome=outcome) == count, outcome
    assert value(found, "txvnc_consoles_open") == 1
    assert value(found, "txvnc_console_bytes_total", direction="to_vnc") == 201
    assert value(found, "txvnc_console_bytes_total", direction="from_vnc") == 200
    assert value(found, "txvnc_token_checks_total", result="valid") == 5
    assert value(found, "txvnc_token_checks_total", result="invalid") == 1
    assert value(found, "txvnc_token_checks_total", result="error") == 1
    assert value(found, "txvnc_token_check_seconds_count") == 7
    assert value(found, "txvnc_token_check_seconds_bucket", le="+Inf") == 7
    assert value(found, "txvnc_token_api_errors_total", kind="unavailable") == 1
    assert value(found, "txvnc_handshakes_refused_total", status="403") == 3
    assert value(found, "txvnc_handshakes_refused_total", status="503") == 1
