"""
C{/metrics} for the whole service under C{--workers N}.

The workers use prometheus_client's multiprocess mode: the twistd process
makes a private directory (L{WorkerMetricsDirectory}) and starts every
worker with C{PROMETHEUS_MULTIPROC_DIR} naming it, so each worker's
counters and histogram live in memory-mapped files there, one set per
process, and the twistd process's C{/metrics} sums the files (its own
registry holds nothing else: under C{--workers} it runs no proxy). The
variable is set only in the workers' environment: prometheus_client reads
it once, at import, and the twistd process keeps ordinary in-memory
metrics.

What the numbers mean:

 - Counters and the histogram are the service's totals since the twistd
   process started. A worker writes its console events as they happen and
   its byte counts every L{PUBLISH_INTERVAL} seconds
   (L{ProxyMetricsPublisher}; the relay itself counts bytes in plain
   integers, never in a metric).
 - C{txvnc_consoles_open} is the sum over the workers alive now (a
   C{livesum} gauge).
 - When a worker ends, for whatever reason, the twistd process removes its
   gauge, counts the consoles it still had open as ended with the outcome
   C{worker_died}, and adds its counters and histogram into the
   directory's C{*_ended.db} files before deleting its own: totals never go
   backwards while the twistd process runs, and the directory holds a
   fixed number of files however often workers restart. What a killed
   worker had not published yet (at most its last second of bytes) is
   lost.
 - When the twistd process stops, the directory goes with it, and the
   counters start again from zero with the next process, as Prometheus
   expects of a restart.

Each worker keeps one open file per kind of metric (counter, histogram,
gauge), whatever the number of consoles.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txvnc.ops.metrics import CONSOLE_BYTES, CONSOLES_ENDED, CONSOLES_OPEN
from txvnc.ops.timers import looping

if TYPE_CHECKING:
    from txvnc.proxy.websocket import ConsoleProxyFactory

#: prometheus_client's switch to multiprocess mode, read at its import.
ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds between a worker's publications of open consoles and bytes.
PUBLISH_INTERVAL = 1.0

#: The outcome of the consoles open on a worker when it died.
WORKER_DIED = "worker_died"

#: Where ended workers' counts are kept (the "pid" part of the file name).
ENDED = "ended"

#: Kinds of files whose values add up across processes.
_ADDITIVE = ("counter", "histogram")


class WorkerMetricsDirectory:
    """
    The workers' metric files, owned by the twistd process.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls) -> WorkerMetricsDirectory:
        """A new, empty, private (0700) directory under C{$TMPDIR}."""
        return cls(tempfile.mkdtemp(prefix="txvnc-metrics-"))

    def env(self) -> dict[str, str]:
        """What to add to a worker's environment."""
        return {ENV: self.path}

    def collector(self) -> MultiProcessCollector:
        """A collector summing every process's files, for a registry."""
        return MultiProcessCollector(None, path=self.path)

    def process_ended(self, pid: int) -> None:
        """
        Fold the files of worker C{pid}, which has ended, into the ended
        workers' totals (see the module's docstring).
        """
        open_consoles = self._open_consoles(pid)
        mark_process_dead(pid, self.path)
        extra = {}
        if open_consoles:
            key = mmap_key(
                CONSOLES_ENDED[0],
                CONSOLES_ENDED[0] + "_total",
                ["outcome"],
                [WORKER_DIED],
                CONSOLES_ENDED[1],
            )
            extra[key] = float(open_consoles)
        for kind in _ADDITIVE:
            self._fold(kind, pid, extra if kind == "counter" else {})

    def _open_consoles(self, pid: int) -> int:
        path = os.path.join(self.path, f"gauge_livesum_{pid}.db")
        if not os.path.exists(path):
            return 0
        return int(
            sum(
                value
                for key, value, _, _ in MmapedDict.read_all_values_from_file(path)
                if json.loads(key)[0] == CONSOLES_OPEN[0]
            )
        )

    def _fold(self, kind: str, pid: int, extra: dict[str, float]) -> None:
        dead = os.path.join(self.path, f"{kind}_{pid}.db")
        ended = os.path.join(self.path, f"{kind}_{ENDED}.db")
        if not os.path.exists(dead) and not extra:
            return
        sources = [p for p in (ended, dead) if os.path.exists(p)]
        totals: defaultdict[str, float] = defaultdict(float, extra)
        for path in sources:
            for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
                totals[key] += value
        # Written aside and renamed over the old totals, then the dead
        # process's file removed: a scrape (in this thread) never sees the
        # dead process's counts twice or not at all.
        new = ended + ".new"
        out = MmapedDict(new)
        try:
            for key, value in totals.items():
                out.write_value(key, value, 0.0)
        finally:
            out.close()
        os.replace(new, ended)
        if os.path.exists(dead):
            os.remove(dead)

    def remove(self) -> None:
        """Delete the directory and every file in it."""
        shutil.rmtree(self.path, ignore_errors=True)


class ProxyMetricsPublisher:
    """
    In a worker: writes the open consoles and the bytes relayed (which the
    relay keeps in plain integers, L{txvnc.ops.metrics.ProxyCollector} reads
    them at scrape time in one process) into the worker's metric files.

    @param registry: where else to register the metrics (multiprocess mode
        writes every metric to the files, registered or not).
    """

    _log = Logger()

    def __init__(
        self,
        factory: ConsoleProxyFactory,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._factory = factory
        self._open = Gauge(
            *CONSOLES_OPEN, multiprocess_mode="livesum", registry=registry
        )
        relayed = Counter(*CONSOLE_BYTES, ["direction"], registry=registry)
        self._to_vnc = relayed.labels("to_vnc")
        self._from_vnc = relayed.labels("from_vnc")
        self._published_to_vnc = 0
        self._published_from_vnc = 0
        self._open.set(0)
        self._loop: LoopingCall | None = None

    def publish(self) -> None:
        """Write the open consoles and the bytes relayed since last time."""
        factory = self._factory
        consoles = factory.consoles
        self._open.set(len(consoles))
        to_vnc = factory.closed_bytes_to_vnc + sum(c.bytes_to_vnc for c in consoles)
        from_vnc = factory.closed_bytes_from_vnc + sum(
            c.bytes_from_vnc for c in consoles
        )
        if to_vnc > self._published_to_vnc:
            self._to_vnc.inc(to_vnc - self._published_to_vnc)
            self._published_to_vnc = to_vnc
        if from_vnc > self._published_from_vnc:
            self._from_vnc.inc(from_vnc - self._published_from_vnc)
            self._published_from_vnc = from_vnc

    def start(self, clock: IReactorTime, interval: float = PUBLISH_INTERVAL) -> None:
        """Publish every C{interval} seconds from now on."""
        self._loop = looping(
            clock, self.publish, "publishing the metrics failed", self._log
        )
        self._loop.start(interval, now=True)

    def stop(self) -> None:
        """Publish a last time and stop."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.publish()
