"""
Prometheus metrics: the proxy's console events counted, its open consoles
and bytes read at scrape time, and the C{/metrics} resource that serves
them on the API listener.

Each process has its own L{CollectorRegistry} (built by L{txvnc.service}), so
tests read exact values without interference from other tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from txvnc.client import ConsoleAuthError, ConsoleAuthUnavailable
from txvnc.proxy.events import ConsoleEvents, TokenCheck

if TYPE_CHECKING:
    from txvnc.proxy.websocket import ConsoleProxyFactory

#: Buckets for token check latency: a local API answers in milliseconds, a
#: remote one in tens; the top buckets show timeouts coming.
TOKEN_CHECK_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)

#: (name, help) of the metrics that L{txvnc.ops.sharedmetrics} also writes:
#: under C{--workers} each worker publishes the open consoles and bytes that
#: L{ProxyCollector} reads in one process, and the twistd process counts the
#: consoles of a worker that died; the same names either way.
CONSOLES_ENDED = (
    "txvnc_consoles",
    (
        "Console requests that ended, by outcome (ok, bad_token, bad_origin, "
        "target_down, idle_timeout, revoked, worker_died, ...)."
    ),
)
CONSOLES_OPEN = ("txvnc_consoles_open", "Consoles open now (relaying to a VNC server).")
CONSOLE_BYTES = (
    "txvnc_console_bytes",
    "Bytes relayed, by direction: to_vnc (from browsers) and from_vnc.",
)


class PrometheusConsoleEvents(ConsoleEvents):
    """
    Counts the proxy's console events into C{registry}.
    """

    def __init__(self, registry: CollectorRegistry, clock: IReactorTime) -> None:
        self._clock = clock
        self.consoles = Counter(*CONSOLES_ENDED, ["outcome"], registry=registry)
        self.refused = Counter(
            "txvnc_handshakes_refused",
            "WebSocket upgrades refused, by HTTP status.",
            ["status"],
            registry=registry,
        )
        self.token_checks = Counter(
            "txvnc_token_checks",
            "Token checks with the token API, by result (valid, invalid, error).",
            ["result"],
            registry=registry,
        )
        self.token_check_seconds = Histogram(
            "txvnc_token_check_seconds",
            "Time taken by token checks, whatever their result.",
            buckets=TOKEN_CHECK_BUCKETS,
            registry=registry,
        )
        self.token_api_errors = Counter(
            "txvnc_token_api_errors",
            "Token checks that failed because of the token API: unavailable "
            "(refused, unreachable, timed out, 5xx) or refused (4xx to the proxy).",
            ["kind"],
            registry=registry,
        )

    def handshake_refused(self, status: int) -> None:
        self.refused.labels(str(status)).inc()

    def console_ended(self, outcome: str, opened: bool) -> None:
        self.consoles.labels(outcome).inc()

    @contextmanager
    def token_check(self) -> Iterator[TokenCheck]:
        check = TokenCheck()
        started = self._clock.seconds()
        try:
            yield check
        except ConsoleAuthUnavailable:
            self.token_api_errors.labels("unavailable").inc()
            raise
        except ConsoleAuthError:
            self.token_api_errors.labels("refused").inc()
            raise
        finally:
            self.token_check_seconds.observe(self._clock.seconds() - started)
            self.token_checks.labels(check.result).inc()


class ProxyCollector(Collector):
    """
    Open consoles and bytes relayed, read from the factory at scrape time:
    nothing is counted per message on the data path.
    """

    def __init__(self, factory: ConsoleProxyFactory) -> None:
        self._factory = factory

    def collect(self) -> Iterable[Metric]:
        factory = self._factory
        consoles = list(factory.consoles)
        open_ = GaugeMetricFamily(*CONSOLES_OPEN)
        open_.add_metric([], len(consoles))
        yield open_
        relayed = CounterMetricFamily(*CONSOLE_BYTES, labels=["direction"])
        relayed.add_metric(
            ["to_vnc"],
            factory.closed_bytes_to_vnc + sum(c.bytes_to_vnc for c in consoles),
        )
        relayed.add_metric(
            ["from_vnc"],
            factory.closed_bytes_from_vnc + sum(c.bytes_from_vnc for c in consoles),
        )
        yield relayed


def add_process_metrics(
    registry: CollectorRegistry,
    workers: Callable[[], Mapping[int, int]] | None = None,
) -> None:
    """
    Put on C{registry} what prometheus_client's default registry has and
    ours (one per process, for exact tests) lacked: this process's
    C{process_*} series (memory, CPU, open and maximum file descriptors,
    start time) and C{python_info}.

    @param workers: under C{--workers}, the worker processes running now
        (worker number to process id): their C{process_*} series too,
        labelled C{worker="N"} (L{WorkerProcessCollector}).
    """
    PlatformCollector(registry=registry)
    if workers is None:
        ProcessCollector(registry=registry)
    else:
        registry.register(WorkerProcessCollector(workers))


class WorkerProcessCollector(Collector):
    """
    C{process_*} of this process (unlabelled, as with one process) and of
    each worker (labelled C{worker="N"}), read from C{/proc} at scrape time.

    A worker serves no C{/metrics} of its own, and prometheus_client's
    multiprocess mode, which sums the workers' counters, has no process
    series: so the twistd process reads each worker's C{/proc} entry, as
    it reads its own. A worker that ended before the scrape has no
    series; its successor, under the same number, is a new process.
    """

    def __init__(
        self, workers: Callable[[], Mapping[int, int]], proc: str = "/proc"
    ) -> None:
        self._workers = workers
        self._proc = proc

    def _sources(self) -> Iterator[tuple[dict[str, str], ProcessCollector]]:
        yield {}, ProcessCollector(proc=self._proc, registry=None)
        for number, pid in sorted(self._workers().items()):
            collector = ProcessCollector(
                pid=functools.partial(int, pid), proc=self._proc, registry=None
            )
            yield {"worker": str(number)}, collector

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for labels, collector in self._sources():
            for family in collector.collect():
                merged = families.setdefault(
                    family.name,
                    Metric(family.name, family.documentation, family.type),
                )
                for sample in family.samples:
                    merged.add_sample(
                        sample.name, {**sample.labels, **labels}, sample.value
                    )
        return list(families.values())


class MetricsResource(Resource):
    """
    C{GET /metrics} in Prometheus' text format.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return generate_latest(self._registry)

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)
