"""
Round trip A/B: several txvnc trees (and websockify) measured in one run.

    benchmarks/.venv/bin/python benchmarks/rtt_ab.py --rounds 5 \\
        --system main=.venv/bin/twistd \\
        --system before=/work/wt-before/.venv/bin/twistd \\
        --system "before-nospin=/work/wt-before/.venv/bin/twistd --poll-spin 0"

Each --system is NAME=TWISTD [EXTRA ARGS]: the twistd of a tree's own venv
(its non-editable install) and options added after run.py's. Every system
gets the same backend and the load client's `rtt` figure (64-byte message,
its echo; p50/p99 and the proxy's CPU per round trip) in an order shuffled
per round, as in run.py; the medians and every round's figures are printed
with the load average. The round trip moves between runs with the
scheduler's placement of the three processes (docs/performance.md, "Round
trip: where the proxy's time goes"), so compare systems within one run.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import run as R


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--n", type=int, default=20000, help="round trips per system and round"
    )
    ap.add_argument("--system", action="append", default=[], help="NAME=TWISTD [ARGS]")
    ap.add_argument("--no-websockify", action="store_true")
    a = ap.parse_args()
    R.raise_nofile()
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        bench = R.Bench(Path(tmp), True)
        bench.start_backend()
        systems: dict[str, R.Proxy] = {}
        try:
            if not a.no_websockify:
                systems["websockify"] = bench.start_websockify()
            for spec in a.system:
                name, command = spec.split("=", 1)
                twistd, *extra = shlex.split(command)
                # run.py starts its module's TWISTD with its own arguments:
                # a wrapper adds this system's after them.
                wrapper = Path(tmp) / f"twistd-{name}"
                wrapper.write_text(
                    "#!/bin/sh\nexec "
                    + shlex.join([str(Path(twistd).resolve())])
                    + ' "$@" '
                    + shlex.join(extra)
                    + "\n"
                )
                wrapper.chmod(0o755)
                R.TWISTD = wrapper
                proxy = bench.start_txvnc()
                proxy.name = name
                systems[name] = proxy
            rows: dict[str, list[dict[str, float]]] = {k: [] for k in systems}
            for r in range(a.rounds):
                order = list(systems)
                random.shuffle(order)
                for name in order:
                    proxy = systems[name]
                    res = bench.load(
                        "rtt", proxy.url(bench.backend["echo"]), a.n, proxy=proxy
                    )
                    row = {
                        "p50": res["p50_us"],
                        "p90": res["p90_us"],
                        "p99": res["p99_us"],
                        "cpu": res["proxy_cpu_s"] / res["samples"] * 1e6,
                    }
                    rows[name].append(row)
                    shown = " ".join(f"{k} {v:.1f}" for k, v in row.items())
                    print(
                        f"round {r} {name:16} {shown}  load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
        finally:
            for proxy in systems.values():
                proxy.stop()
            bench.stop()
    print("medians (µs; ratio to websockify)")
    base = (
        {
            k: statistics.median(x[k] for x in rows["websockify"])
            for k in ("p50", "p99", "cpu")
        }
        if "websockify" in rows
        else {}
    )
    for name, got in rows.items():
        cells = []
        for k in ("p50", "p90", "p99", "cpu"):
            m = statistics.median(x[k] for x in got)
            cells.append(
                f"{k} {m:.1f}" + (f" ({m / base[k]:.2f}x)" if k in base else "")
            )
        print(f"{name:16} " + "  ".join(cells))
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
