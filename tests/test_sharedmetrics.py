"""
The workers' metrics: real processes in prometheus_client's multiprocess
mode write their files, the twistd side sums and folds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock

from txvnc.ops.sharedmetrics import (
    ENV,
    WORKER_DIED,
    ProxyMetricsPublisher,
    WorkerMetricsDirectory,
)

#: What a worker does with its metrics, in a process of its own: console
#: events, token checks, and a publication of open consoles and bytes.
WORKER = """
import json, os, sys
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from txvnc.ops.metrics import PrometheusConsoleEvents
from txvnc.ops.sharedmetrics import ProxyMetricsPublisher

spec = json.loads(sys.argv[1])
clock = Clock()
events = PrometheusConsoleEvents(CollectorRegistry(), clock)
for outcome, count in spec["ended"].items():
    for _ in range(count):
        events.console_ended(outcome, opened=outcome == "ok")
for seconds in spec["checks"]:
    with events.token_check() as check:
        clock.advance(seconds)
        check.result = "valid"
console = type("Console", (), {"bytes_to_vnc": 0, "bytes_from_vnc": 0})
factory = type("Factory", (), {})()
factory.consoles = set()
for to_vnc, from_vnc in spec["open"]:
    c = console()
    c.bytes_to_vnc, c.bytes_from_vnc = to_vnc, from_vnc
    factory.consoles.add(c)
factory.closed_bytes_to_vnc, factory.closed_bytes_from_vnc = spec["closed"]
ProxyMetricsPublisher(factory).publish()
print(os.getpid())
"""


def run_worker(directory: WorkerMetricsDirectory, **spec) -> int:
    """Run one worker-like process against C{directory}; its pid."""
    env = {k: v for k, v in os.environ.items() if k != ENV} | directory.env()
    done = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    out = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found, name, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def directory():
    shared = WorkerMetricsDirectory.create()
    yield shared
    shared.remove()
    assert not os.path.exists(shared.path)


def test_the_directory_is_private(directory):
    """The workers' metrics directory is new, empty and readable by its owner only."""
    assert os.listdir(directory.path) == []
    assert os.stat(directory.path).st_mode & 0o777 == 0o700
    assert directory.env() == {ENV: directory.path}


def test_workers_are_summed_and_an_ended_worker_is_folded(directory):
    """Two workers' counts add up; when one ends its counts stay, its open consoles become worker_died and its files go."""
    registry = CollectorRegistry()
    registry.register(directory.collector())
    one = run_worker(
        directory,
        ended={"ok": 3, "bad_token": 1},
        checks=[0.002, 0.3],
        open=[[10, 1000], [20, 2000]],
        closed=[5, 500],
    )
    two = run_worker(
        directory,
        ended={"ok": 1, "target_down": 2},
        checks=[0.002],
        open=[[7, 70]],
        closed=[0, 0],
    )

    def check(found, open_, died):
        assert value(found, "txvnc_consoles_total", outcome="ok") == 4
        assert value(found, "txvnc_consoles_total", outcome="bad_token") == 1
        assert value(found, "txvnc_consoles_total", outcome="target_down") == 2
        assert value(found, "txvnc_consoles_total", outcome=WORKER_DIED) == died
        assert value(found, "txvnc_consoles_open") == open_
        assert value(found, "txvnc_console_bytes_total", direction="to_vnc") == 42
        assert value(found, "txvnc_console_bytes_total", direction="from_vnc") == 3570
        assert value(found, "txvnc_token_checks_total", result="valid") == 3
        assert value(found, "txvnc_token_check_seconds_count") == 3
        assert value(found, "txvnc_token_check_seconds_bucket", le="0.0025") == 2
        assert value(found, "txvnc_token_check_seconds_bucket", le="0.25") == 2
        assert value(found, "txvnc_token_check_seconds_bucket", le="0.5") == 3
        assert value(found, "txvnc_token_check_seconds_sum") == pytest.approx(0.304)

    check(scrape(registry), open_=3, died=0)

    directory.process_ended(one)
    check(scrape(registry), open_=1, died=2)
    assert not [f for f in os.listdir(directory.path) if str(one) in f]

    directory.process_ended(two)
    check(scrape(registry), open_=0, died=3)
    assert sorted(os.listdir(directory.path)) == [
        "counter_ended.db",
        "histogram_ended.db",
    ]


def test_a_worker_that_never_counted_anything_leaves_nothing_behind(directory):
    """Folding a process that wrote no files changes nothing and creates nothing."""
    directory.process_ended(999_999_999)
    assert os.listdir(directory.path) == []


class Console:
    """A console's byte counts, as the relay keeps them."""

    def __init__(self, bytes_to_vnc: int = 0, bytes_from_vnc: int = 0) -> None:
        self.bytes_to_vnc = bytes_to_vnc
        self.bytes_from_vnc = bytes_from_vnc


def test_the_publisher_writes_deltas_every_second_and_once_more_on_stop():
    """Open consoles and bytes are published each interval; bytes of consoles that closed are not counted twice."""
    registry = CollectorRegistry()
    a, b = Console(bytes_to_vnc=10, bytes_from_vnc=100), Console()
    factory = SimpleNamespace(
        consoles={a, b}, closed_bytes_to_vnc=1, closed_bytes_from_vnc=2
    )
    publisher = ProxyMetricsPublisher(factory, registry)
    clock = Clock()
    publisher.start(clock)
    found = scrape(registry)
    assert value(found, "txvnc_consoles_open") == 2
    assert value(found, "txvnc_console_bytes_total", direction="to_vnc") == 11
    assert value(found, "txvnc_console_bytes_total", direction="from_vnc") == 102

    # a closes (its bytes move to the factory's closed totals), b relays.
    factory.consoles.discard(a)
    factory.closed_bytes_to_vnc += a.bytes_to_vnc
    factory.closed_bytes_from_vnc += a.bytes_from_vnc
    b.bytes_to_vnc = 5
    assert value(scrape(registry), "txvnc_console_bytes_total", direction="to_vnc") == 11
    clock.advance(1)
    found = scrape(registry)
    assert value(found, "txvnc_consoles_open") == 1
    assert value(found, "txvnc_console_bytes_total", direction="to_vnc") == 16
    assert value(found, "txvnc_console_bytes_total", direction="from_vnc") == 102

    b.bytes_from_vnc = 8
    publisher.stop()
    assert value(scrape(registry), "txvnc_console_bytes_total", direction="from_vnc") == 110
    assert not clock.getDelayedCalls()


def test_a_failed_publication_is_logged_and_the_next_one_runs():
    """One publication that raises is logged, and the publisher still writes at the next interval."""
    from twisted.logger import capturedLogs

    class Flaky(Console):
        """A console whose byte count cannot be read the first time."""

        reads = 0

        @property
        def bytes_to_vnc(self) -> int:
            Flaky.reads += 1
            if Flaky.reads == 1:
                raise RuntimeError("torn read")
            return 7

        @bytes_to_vnc.setter
        def bytes_to_vnc(self, value: int) -> None:
            pass

    registry = CollectorRegistry()
    factory = SimpleNamespace(
        consoles={Flaky()}, closed_bytes_to_vnc=0, closed_bytes_from_vnc=0
    )
    publisher = ProxyMetricsPublisher(factory, registry)
    clock = Clock()
    with capturedLogs() as events:
        publisher.start(clock)
        clock.advance(1)
    assert value(scrape(registry), "txvnc_console_bytes_total", direction="to_vnc") == 7
    (failed,) = [e for e in events if "log_failure" in e]
    assert failed["log_failure"].check(RuntimeError)
    publisher.stop()
    assert not clock.getDelayedCalls()
