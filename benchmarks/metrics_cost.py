"""
What a metric update costs in one process and in a --workers process
(prometheus_client's multiprocess mode, where every update is a write to a
memory-mapped file), and what one publication of a worker's open consoles
and byte counts costs with many consoles open.

    .venv/bin/python benchmarks/metrics_cost.py [--consoles N]

Prints one table. Each mode runs in its own Python process, because
prometheus_client picks its value class when it is first imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import timeit

MODES = ("one process", "worker (mmap)")
ENV = "PROMETHEUS_MULTIPROC_DIR"


def measure(consoles: int) -> dict[str, float]:
    """Seconds per operation, in this process's mode."""
    from prometheus_client import CollectorRegistry
    from twisted.internet.task import Clock

    from txvnc.ops.metrics import PrometheusConsoleEvents
    from txvnc.ops.sharedmetrics import ProxyMetricsPublisher

    events = PrometheusConsoleEvents(CollectorRegistry(), Clock())
    ok = events.consoles.labels("ok")

    class Console:
        bytes_to_vnc = 1
        bytes_from_vnc = 1

    class Factory:
        closed_bytes_to_vnc = 0
        closed_bytes_from_vnc = 0

    factory = Factory()
    factory.consoles = {Console() for _ in range(consoles)}  # type: ignore[attr-defined]
    publisher = ProxyMetricsPublisher(factory)  # type: ignore[arg-type]

    def publish() -> None:
        factory.closed_bytes_to_vnc += 1
        publisher.publish()

    many = 200_000
    cases = {
        "counter.labels(x).inc()": (lambda: events.consoles.labels("ok").inc(), many),
        "child.inc()": (ok.inc, many),
        "histogram.observe()": (lambda: events.token_check_seconds.observe(1e-3), many),
        "console_ended()": (lambda: events.console_ended("ok", True), many),
        f"publish() with {consoles} consoles": (publish, 200),
    }
    out = {}
    for name, (call, number) in cases.items():
        best = min(timeit.repeat(call, number=number, repeat=5))
        out[name] = best / number
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consoles", type=int, default=9000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.consoles)))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="txvnc-metrics-bench-") as directory:
        for mode in MODES:
            env = {k: v for k, v in os.environ.items() if k != ENV}
            if mode != "one process":
                env[ENV] = directory
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--consoles", str(args.consoles)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode] = json.loads(done.stdout)
    names = list(results[MODES[0]])
    width = max(map(len, names))
    print(f"{'operation':<{width}}  " + "  ".join(f"{m:>14}" for m in MODES))
    for name in names:
        cells = "  ".join(f"{results[m][name] * 1e6:>11.2f} us" for m in MODES)
        print(f"{name:<{width}}  {cells}")


if __name__ == "__main__":
    main()
