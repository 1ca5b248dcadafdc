"""
C{/metrics} carries the process's own series (memory, CPU, open file
descriptors, start time) and the Python platform, as prometheus_client's
default registry would; under C{--workers} each worker's process series
too, labelled by worker number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.twistd import start_twistd
from txvnc.ops.metrics import WorkerProcessCollector, add_process_metrics

#: The series prometheus_client's process collector gives on Linux.
PROCESS_SERIES = (
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_one_process_has_its_process_and_platform_series() -> None:
    """Without workers, the registry has this process's series, unlabelled, and python_info."""
    registry = CollectorRegistry()
    add_process_metrics(registry)
    found = samples(generate_latest(registry).decode())
    for name in PROCESS_SERIES:
        assert (name, frozenset()) in found, name
    assert found[("process_open_fds", frozenset())] >= 3
    version = ".".join(map(str, sys.version_info[:3]))
    info = [labels for name, labels in found if name == "python_info"]
    assert len(info) == 1 and ("version", version) in info[0]


@pytest.fixture
def sleeper():
    """A child process standing in for a worker."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_each_worker_is_labelled(sleeper: subprocess.Popen[bytes]) -> None:
    """With workers, each worker's process series carries worker="N" beside this process's own; each is read from that process."""
    registry = CollectorRegistry()
    workers = {1: sleeper.pid, 2: os.getpid()}
    add_process_metrics(registry, lambda: workers)
    found = samples(generate_latest(registry).decode())
    for name in PROCESS_SERIES:
        for labels in ({}, {"worker": "1"}, {"worker": "2"}):
            assert (name, frozenset(labels.items())) in found, (name, labels)
    rss = "process_resident_memory_bytes"
    assert found[(rss, frozenset({("worker", "2")}))] > 0
    start = "process_start_time_seconds"
    assert found[(start, frozenset({("worker", "1")}))] >= found[(start, frozenset())]
    assert len([n for n, _ in found if n == "python_info"]) == 1


def test_a_worker_that_is_gone_is_left_out(sleeper: subprocess.Popen[bytes]) -> None:
    """A worker that ended between the pool's count and the scrape has no series; the rest are there."""
    collector = WorkerProcessCollector(lambda: {1: sleeper.pid, 2: os.getpid()})
    sleeper.kill()
    sleeper.wait()
    labels = {
        s.labels.get("worker")
        for family in collector.collect()
        for s in family.samples
    }
    assert labels == {None, "2"}


@pytest.mark.integration
def test_twistd_serves_process_series(tmp_path: Path) -> None:
    """A single-process twistd txvnc's /metrics has process_* and python_info."""
    (tmp_path / "web").mkdir()
    server = start_twistd(tmp_path, web=tmp_path / "web")
    try:
        import urllib.request

        with urllib.request.urlopen(server.api_url + "/metrics", timeout=30) as r:
            found = samples(r.read().decode())
    finally:
        server.stop()
    for name in PROCESS_SERIES:
        assert (name, frozenset()) in found, name
    assert any(name == "python_info" for name, _ in found)
    assert not any(("worker" in dict(labels)) for _, labels in found)
