"""
C{/metrics} of C{twistd txvnc --workers 2}: the twistd process's own
process series and each worker's, labelled by worker number, read from the
workers that run now (a worker killed and started again is a new process).
"""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.twistd import start_twistd

from .processes import children

pytestmark = pytest.mark.scale

RSS = "process_resident_memory_bytes"
START = "process_start_time_seconds"


def scrape(api_url: str) -> dict[tuple[str, str | None], float]:
    """{(name, worker label or None): value} of /metrics' process series."""
    with urllib.request.urlopen(api_url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, s.labels.get("worker")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("process_")
    }


def start_time(pid: int) -> float:
    """C{pid}'s start, as prometheus_client computes it from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        boot = next(float(line.split()[1]) for line in stat if line.startswith("btime "))
    with open(f"/proc/{pid}/stat") as f:
        started = float(f.read().split(")")[-1].split()[19])
    return boot + started / ticks


@pytest.mark.timeout(120)
def test_every_worker_has_its_process_series(tmp_path: Path) -> None:
    """Each worker's memory, CPU and file descriptors are on /metrics as worker="1" and "2"; a restarted worker's are the new process's."""
    server = start_twistd(tmp_path, page=False, workers=2)
    try:
        found = scrape(server.api_url)
        for worker in (None, "1", "2"):
            assert found[(RSS, worker)] > 0, worker
            assert (("process_open_fds", worker)) in found
            assert (("process_cpu_seconds_total", worker)) in found
        workers = sorted(children(server.pid))
        assert len(workers) == 2
        assert {found[(START, "1")], found[(START, "2")]} == {
            start_time(pid) for pid in workers
        }
        assert found[(START, None)] == start_time(server.pid)

        # Kill one worker: once the pool has started it again, its series
        # are the new process's.
        since = server.log.mark()
        os.kill(workers[0], signal.SIGKILL)
        server.log.wait_for(r"worker \d started \(pid (\d+)\)", since)
        server.log.wait_for(r"txvnc-worker-\d\] ConsoleSite starting on", since)
        now = sorted(children(server.pid))
        assert len(now) == 2 and workers[0] not in now
        found = scrape(server.api_url)
        assert {found[(START, "1")], found[(START, "2")]} == {
            start_time(pid) for pid in now
        }
    finally:
        server.stop()
