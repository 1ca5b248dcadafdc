"""
C{/metrics} of C{twistd txvnc --workers 2} counts both workers' consoles:
a scripted run of good and bad consoles through both real worker
processes, then a worker killed with SIGKILL and restarted; and a proxy of
two workers apart from its token API, whose refusals and outage both
workers count.
"""

from __future__ import annotations

import base64
import os
import re
import signal

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from tests.support.fakevnc import FakeVNCServer
from tests.support.processes import free_port
from tests.support.twistd import start_twistd

from .processes import (
    KEY,
    children,
    open_console,
    until_every_worker,
    until_every_worker_logs,
)
from .test_workers import round_trip, worker_of

pytestmark = pytest.mark.scale

#: Each kind of console is repeated until both workers have had this many.
PER_WORKER = 2

#: Upper bound on repetitions, so a kernel that gives everything to one
#: worker fails the test instead of looping.
MAX_TRIES = 40

#: Seconds /metrics gets to catch up (workers publish bytes every second).
SETTLE = 15.0

Sample = tuple[str, frozenset]


def key(name: str, **labels: str) -> Sample:
    return (name, frozenset(labels.items()))


async def scrape(api_url: str) -> dict[Sample, float]:
    response = await treq.get(api_url + "/metrics", persistent=False)
    assert response.code == 200
    out = {}
    for family in text_string_to_metric_families(await response.text()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def metrics_reach(api_url: str, expected: dict[Sample, float]) -> dict:
    """
    /metrics once it shows C{expected} (or after L{SETTLE} seconds, when
    the comparison fails with both sides shown).
    """
    deadline = reactor.seconds() + SETTLE
    while True:
        found = await scrape(api_url)
        seen = {k: found.get(k, 0.0) for k in expected}
        if seen == expected or reactor.seconds() > deadline:
            assert seen == expected
            return found
        await deferLater(reactor, 0.1, lambda: None)


async def raw_upgrade(port: int, query: str, origin: str | None = None) -> int:
    """The HTTP status of a WebSocket upgrade sent by a plain HTTP client."""
    host = f"127.0.0.1:{port}"
    origin = origin or f"http://{host}"
    response = await treq.get(
        f"http://{host}/websockify?{query}",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            "Host": host,
            "Origin": origin,
        },
        persistent=False,
    )
    await treq.content(response)
    return response.code


@pytest.fixture
def txvnc2(tmp_path):
    server = start_twistd(
        tmp_path, "--max-auth-failures", "0", api_key=KEY, page=False, workers=2
    )
    yield server
    server.stop()


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_metrics_count_every_worker_and_survive_a_killed_one(txvnc2, vnc):
    """/metrics equals both workers' totals after good and bad consoles; a SIGKILLed worker's open consoles leave the gauge, its counts stay."""
    api, port = txvnc2.api_url, txvnc2.proxy_port
    directory = (await txvnc2.wait_for(r"workers' metrics in (\S+)")).group(1)
    workers = sorted(children(txvnc2.process.pid))
    assert len(workers) == 2, txvnc2.log.text()
    sent = 0  # bytes each way
    checks = {"valid": 0, "invalid": 0}

    # Good consoles, each with a round trip of a different size, until
    # each worker holds PER_WORKER * 2 of them.
    sizes = iter(range(1000, 2000))

    async def good_console() -> tuple[int, tuple]:
        nonlocal sent
        token = await txvnc2.mint_async("127.0.0.1", vnc.address.port, ttl=600)
        connected = vnc.next_connection()
        browser = await open_console(port, token)
        server_side = await connected
        checks["valid"] += 1
        payload = os.urandom(next(sizes))
        await round_trip(browser, server_side, payload)
        sent += len(payload)
        return worker_of(server_side, workers), (browser, server_side)

    consoles = await until_every_worker(
        workers, good_console, PER_WORKER * 2, MAX_TRIES * 2
    )

    # Half of each worker's consoles closed by the browser: outcome ok.
    closed = 0
    for pid in workers:
        for browser, _ in consoles[pid][:PER_WORKER]:
            browser.sendClose(1000)
            await browser.closed
            closed += 1
        consoles[pid] = consoles[pid][PER_WORKER:]

    # Bad consoles, each kind repeated until both workers logged it.
    down = FakeVNCServer()
    down_port = down.address.port
    await down.stop()

    async def bad_token() -> None:
        assert await raw_upgrade(port, "token=not-a-token") == 403
        checks["invalid"] += 1

    async def bad_origin() -> None:
        token = await txvnc2.mint_async("127.0.0.1", vnc.address.port, ttl=600)
        assert await raw_upgrade(port, f"token={token}", "https://evil.example") == 403

    async def target_down() -> None:
        browser = await open_console(port, await txvnc2.mint_async("127.0.0.1", down_port, ttl=600))
        checks["valid"] += 1
        _, code, _ = await browser.closed
        assert code == 1011

    bad = {}
    for outcome, attempt, line in [
        ("bad_token", bad_token, r"is invalid or has expired"),
        ("bad_origin", bad_origin, r"refused: origin"),
        ("target_down", target_down, r"cannot connect to 127\.0\.0\.1"),
    ]:
        bad[outcome] = await until_every_worker_logs(
            txvnc2, attempt, line, PER_WORKER, MAX_TRIES
        )

    still_open = sum(len(c) for c in consoles.values())
    expected = {
        key("txvnc_consoles_open"): still_open,
        key("txvnc_consoles_total", outcome="ok"): closed,
        key("txvnc_consoles_total", outcome="bad_token"): bad["bad_token"],
        key("txvnc_consoles_total", outcome="bad_origin"): bad["bad_origin"],
        key("txvnc_consoles_total", outcome="target_down"): bad["target_down"],
        key("txvnc_handshakes_refused_total", status="403"): (
            bad["bad_token"] + bad["bad_origin"]
        ),
        key("txvnc_console_bytes_total", direction="to_vnc"): sent,
        key("txvnc_console_bytes_total", direction="from_vnc"): sent,
        key("txvnc_token_checks_total", result="valid"): checks["valid"],
        key("txvnc_token_checks_total", result="invalid"): checks["invalid"],
        key("txvnc_token_check_seconds_count"): checks["valid"] + checks["invalid"],
        key("txvnc_token_check_seconds_bucket", le="+Inf"): (
            checks["valid"] + checks["invalid"]
        ),
    }
    before = await metrics_reach(api, expected)
    assert not any(
        k[0] == "txvnc_token_api_errors_total" and v for k, v in before.items()
    )

    # SIGKILL one worker: its consoles go from the gauge into worker_died,
    # every count it made stays.
    victim, survivor = workers
    mark = txvnc2.log.mark()
    os.kill(victim, signal.SIGKILL)
    await DeferredList([b.closed for b, _ in consoles[victim]])
    await txvnc2.wait_for(r"worker \d ended \(signal 9\); starting it again", mark)
    restarted = int(
        (await txvnc2.wait_for(r"worker \d started \(pid (\d+)\)", mark)).group(1)
    )
    await txvnc2.wait_for(r"txvnc-worker-\d\] ConsoleSite starting on", mark)
    expected[key("txvnc_consoles_open")] = len(consoles[survivor])
    expected[key("txvnc_consoles_total", outcome="worker_died")] = len(consoles[victim])
    after = await metrics_reach(api, expected)
    # (txvnc's own series: process_* are each process's memory and CPU now.)
    for sample, count in before.items():
        if sample[0].startswith("txvnc_") and sample[0] != "txvnc_consoles_open":
            assert after[sample] == count, sample
    assert not [f for f in os.listdir(directory) if re.search(rf"_{victim}\.db$", f)]
    assert os.path.exists(os.path.join(directory, "counter_ended.db"))

    # New consoles on the restarted worker count on from there.
    workers = [survivor, restarted]
    fresh: dict[int, list] = {pid: [] for pid in workers}
    for n in range(MAX_TRIES):
        if fresh[restarted]:
            break
        token = await txvnc2.mint_async("127.0.0.1", vnc.address.port, ttl=600)
        connected = vnc.next_connection()
        browser = await open_console(port, token)
        server_side = await connected
        checks["valid"] += 1
        payload = os.urandom(500 + n)
        await round_trip(browser, server_side, payload)
        sent += len(payload)
        fresh[worker_of(server_side, workers)].append((browser, server_side))
    assert fresh[restarted], "no new console reached the restarted worker"
    everyone = consoles[survivor] + fresh[survivor] + fresh[restarted]
    for browser, _ in everyone:
        browser.sendClose(1000)
        await browser.closed
    expected |= {
        key("txvnc_consoles_open"): 0,
        key("txvnc_consoles_total", outcome="ok"): closed + len(everyone),
        key("txvnc_console_bytes_total", direction="to_vnc"): sent,
        key("txvnc_console_bytes_total", direction="from_vnc"): sent,
        key("txvnc_token_checks_total", result="valid"): checks["valid"],
        key("txvnc_token_check_seconds_count"): checks["valid"] + checks["invalid"],
        key("txvnc_token_check_seconds_bucket", le="+Inf"): (
            checks["valid"] + checks["invalid"]
        ),
    }
    await metrics_reach(api, expected)

    # The directory goes with the twistd process.
    assert txvnc2.stop() == 0
    assert not os.path.exists(directory)


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_token_api_errors_of_every_worker_on_metrics_listen(tmp_path, vnc):
    """A --no-api --workers 2 proxy's --metrics-listen counts both workers' token API refusals and outages; the workers' /readyz says the API is down."""
    api = start_twistd(tmp_path / "api", api_key=KEY, page=False, proxy=False)
    metrics_port = free_port()
    proxy = start_twistd(
        tmp_path / "proxy",
        "--consoleauth-url", api.api_url,
        "--max-auth-failures", "0",
        "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1",
        api_key=KEY,
        page=False,
        api=False,
        workers=2,
    )  # fmt: skip
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    try:
        await proxy.wait_for(rf"starting on {metrics_port}\b")
        port = proxy.proxy_port
        token = await api.mint_async("127.0.0.1", vnc.address.port, ttl=600)

        async def refused() -> None:
            assert await raw_upgrade(port, f"token={token}") == 503

        async def until_both(line: str) -> int:
            """Console requests until both workers logged C{line}; how many."""
            return await until_every_worker_logs(
                proxy, refused, line, PER_WORKER, MAX_TRIES
            )

        # The proxy's key is replaced by one the API does not know.
        proxy.key_file.write_text(f"proxy unknown-proxy-key-{'u' * 24}\n")
        mark = proxy.log.mark()
        proxy.process.send_signal(signal.SIGHUP)
        for n in (1, 2):
            await proxy.wait_for(rf"txvnc-worker-{n}\] API keys reloaded", mark)
        refusals = await until_both("the token API refused this proxy")

        # The token API goes away.
        assert api.stop() in (0, -signal.SIGTERM)
        outages = await until_both("cannot check token")

        errors = refusals + outages
        await metrics_reach(
            metrics_url,
            {
                key("txvnc_consoles_total", outcome="auth_refused"): refusals,
                key("txvnc_consoles_total", outcome="auth_unavailable"): outages,
                key("txvnc_token_api_errors_total", kind="refused"): refusals,
                key("txvnc_token_api_errors_total", kind="unavailable"): outages,
                key("txvnc_token_checks_total", result="error"): errors,
                key("txvnc_token_check_seconds_count"): errors,
                key("txvnc_handshakes_refused_total", status="503"): errors,
                key("txvnc_consoles_open"): 0,
            },
        )
        # Health is the workers' own, on the proxy port, as before: the
        # status only there; why is on --metrics-listen.
        ready = await treq.get(f"http://127.0.0.1:{port}/readyz", persistent=False)
        assert ready.code == 503
        assert await ready.json() == {"status": "not ready"}
        ready = await treq.get(metrics_url + "/readyz", persistent=False)
        assert ready.code == 503
        assert "token_api" in (await ready.json())["checks"]
        alive = await treq.get(metrics_url + "/healthz", persistent=False)
        assert alive.code == 200
        await treq.content(alive)
    finally:
        api.stop(clean=False)
        code = proxy.stop(clean=False)
    assert code in (0, -signal.SIGTERM), proxy.log.text()
    assert "Traceback" not in proxy.log.text()
