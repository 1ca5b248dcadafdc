"""
One process against --workers 2, A/B in one run: where two workers' extra
CPU per MiB (many streams) or per console (connect) goes.

    benchmarks/.venv/bin/python benchmarks/workers_ab.py
        [--mode many|paced|connect|paced-connect] [--rounds N] [--seconds S]
        [--perf] [--record DIR] [--system LABEL=TWISTD:WORKERS[+spin][@N] ...]

The systems run against one backend, each round in the other order (x1
first in odd rounds, x2 first in even ones). For every measurement, in the
load client's window: the client's bytes and WebSocket frames (bytes per
frame: what each of the proxy's reads got, one frame per read), CPU per
MiB (or per console) of every proxy process on its own, of the load client
and of the backend; the backend's and the client's read and write system
calls (/proc/PID/io: Node reads and writes sockets with read and write);
how the consoles were split between the workers (sockets each holds at the
window's start); with --perf, the proxy processes' recvfrom, sendmsg and
epoll_wait, sendto and epoll_ctl calls and context switches (perf stat);
each process's sleeps and preemptions (/proc/PID/task/*/status); the
kernel's TCP memory and, per side, the bytes queued in the consoles'
sockets at the window's end (ss -tm). Prints every measurement and the
medians, and each system against the first.

Modes: many (100 consoles on the backend's stream script, each as fast as
it goes), paced (100 consoles at 6.4 MB/s each), connect (N clients
opening consoles in a loop), paced-connect (N consoles a second).
A system LABEL=TWISTD:WORKERS may end in +spin (a nice 19 busy loop per
CPU beside it: the machine kept busy without taking CPU the measured
processes want) and @N (its own --consoles).

Needs root for --perf and --record (perf's tracepoints).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from run import HERE, NODE, Bench, MiB, machine_jiffies, process_tree  # noqa: E402

PERF_EVENTS = (
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_epoll_ctl",
    "context-switches",
)


def own_cpu(pid: int) -> float:
    """CPU seconds of process C{pid}'s live threads (not its children)."""
    ns = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            ns += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return ns / 1e9


def stat_field(i: int) -> int:
    """Field C{i} of /proc/stat's cpu line (6 softirq, 7 steal), in ticks."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[1 + i])


def switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of C{pid}'s threads."""
    vol = invol = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
    return vol, invol


def tcp_mem() -> int:
    """Pages the kernel's TCP sockets hold now (/proc/net/sockstat)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            words = line.split()
            return int(words[words.index("mem") + 1])
    return 0


def queued(proxy_port: int, vnc_port: int) -> dict[str, float]:
    """
    MiB the kernel holds for each side of the consoles (C{ss -tm}: a
    socket's receive and send memory): the backend's sends, the proxy's
    VNC-side receives, the proxy's browser-side sends, the client's
    receives.
    """
    out = dict.fromkeys(("backend send", "proxy recv", "proxy send", "client recv"), 0.0)
    text = subprocess.run(["ss", "-tmnH", "state", "established"],
                          capture_output=True, text=True).stdout  # fmt: skip
    lines = text.splitlines()
    for addr, mem in zip(lines[::2], lines[1::2]):
        words = addr.split()
        local, peer = int(words[2].rsplit(":", 1)[1]), int(words[3].rsplit(":", 1)[1])
        # "skmem:(r0,rb131072,t0,tb4194304,...)"
        inside = mem.strip().removeprefix("skmem:(").removesuffix(")")
        fields = {}
        for f in inside.split(","):
            name = f.rstrip("0123456789")
            if name and name != f:
                fields[name] = int(f[len(name):])
        recv, send = fields.get("r", 0) / MiB, fields.get("t", 0) / MiB
        if local == vnc_port:
            out["backend send"] += send
        elif peer == vnc_port:
            out["proxy recv"] += recv
        elif local == proxy_port:
            out["proxy send"] += send
        elif peer == proxy_port:
            out["client recv"] += recv
    return out


def io(pid: int) -> dict[str, int]:
    """C{/proc/PID/io}: read and write calls and bytes."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            k, v = line.split(":")
            out[k] = int(v)
    return out


def sockets(pid: int) -> int:
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
    return n


def snapshot(proxy: int, backend: int, client: int) -> dict:
    pids = process_tree(proxy)
    return {
        "cpu": {pid: own_cpu(pid) for pid in pids},
        "backend_cpu": own_cpu(backend),
        "backend_io": io(backend),
        "switches": {
            "proxy": tuple(map(sum, zip(*(switches(p) for p in pids)))),
            "client": switches(client),
            "backend": switches(backend),
        },
        "client_io": io(client),
        "machine": machine_jiffies(),
        "steal": stat_field(7),
        "softirq": stat_field(6),
        "sockets": {pid: sockets(pid) for pid in pids},
        "tcp_mem": tcp_mem(),
        "t": time.monotonic(),
    }


def measure(
    bench: Bench,
    proxy: run.Proxy,
    mode: str,
    seconds: float,
    consoles: int,
    perf: bool,
    record: Path | None = None,
) -> dict:
    be = bench.backend
    backend = bench.procs[0].pid
    if mode in ("many", "paced"):
        script = "stream" if mode == "many" else "paced"
        args = ["many", proxy.url(be[script]), str(consoles), str(seconds)]
    elif mode == "paced-connect":
        args = ["paced-connect", proxy.url(be["hold"]), str(seconds), str(consoles)]
    else:
        args = ["connect", proxy.url(be["hold"]), str(seconds), str(consoles)]
    proc = subprocess.Popen(
        [NODE, str(HERE / "load.mjs"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "BENCH_ACK": "1"},
    )
    assert proc.stdout is not None and proc.stdin is not None
    marks: dict[str, dict] = {}
    perf_proc = None
    perf_out = Path(tempfile.mktemp(prefix="perf-", suffix=".csv"))
    result = None
    for line in proc.stdout:
        if line.startswith(b'{"mark"'):
            mark = json.loads(line)["mark"]
            marks[mark] = snapshot(proxy.proc.pid, backend, proc.pid)
            if mark == "end" and mode in ("many", "paced"):
                marks[mark]["queued"] = queued(
                    proxy.port, be["stream" if mode == "many" else "paced"]
                )
            if mark == "end" and perf_proc is not None:
                perf_proc.send_signal(signal.SIGINT)
                perf_proc.wait()
            if mark == "start":
                if perf:
                    pids = ",".join(map(str, process_tree(proxy.proc.pid)))
                    perf_proc = subprocess.Popen(
                        ["perf", "stat", "-x,", "-o", str(perf_out),
                         "-e", ",".join(PERF_EVENTS), "-p", pids],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    time.sleep(0.2)  # perf attached before the window opens
                    marks[mark] = snapshot(proxy.proc.pid, backend, proc.pid)
                elif record is not None:
                    perf_proc = subprocess.Popen(
                        ["perf", "record", "-a", "-g", "-F", "499", "-o", str(record)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    time.sleep(0.3)
                    marks[mark] = snapshot(proxy.proc.pid, backend, proc.pid)
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
        else:
            result = json.loads(line)
    proc.wait()
    assert result is not None, "the load client printed no result"
    s0, s1 = marks["start"], marks["end"]
    out: dict = {"system": proxy.name}
    if mode in ("many", "paced"):
        mib = result["bytes_per_s"] * result["seconds"] / MiB
        unit, per = "MiB", mib
        out["MB/s"] = result["bytes_per_s"] / MiB
        out["KiB/frame"] = result["bytes_per_s"] * result["seconds"] / 1024 / max(result["frames"], 1)
        out["fairness"] = result["fairness"]
    else:
        per = result["opened"]
        unit = "console"
        out["consoles/s"] = result["per_s"]
    scale = 1e3 if unit == "MiB" else 1e6  # ms per MiB, µs per console
    label = "ms/MiB" if unit == "MiB" else "µs/console"
    cpu = {pid: s1["cpu"].get(pid, 0) - s0["cpu"].get(pid, 0) for pid in s0["cpu"]}
    root = proxy.proc.pid
    out[f"proxy {label}"] = scale * sum(cpu.values()) / per
    out[f"supervisor {label}"] = scale * cpu.get(root, 0) / per if len(cpu) > 1 else 0.0
    workers = sorted(pid for pid in cpu if pid != root) or [root]
    for i, pid in enumerate(workers, 1):
        out[f"w{i} {label}"] = scale * cpu[pid] / per
        out[f"w{i} sockets"] = s0["sockets"].get(pid, 0)
    out[f"client {label}"] = scale * result["client_cpu_s"] / per
    out[f"backend {label}"] = scale * (s1["backend_cpu"] - s0["backend_cpu"]) / per
    bw = s1["backend_io"].get("syscw", 0) - s0["backend_io"].get("syscw", 0)
    bwb = s1["backend_io"].get("wchar", 0) - s0["backend_io"].get("wchar", 0)
    cr = s1["client_io"].get("syscr", 0) - s0["client_io"].get("syscr", 0)
    crb = s1["client_io"].get("rchar", 0) - s0["client_io"].get("rchar", 0)
    out[f"backend writes/{unit}"] = bw / per
    out["backend KiB/write"] = bwb / 1024 / max(bw, 1)
    out[f"client reads/{unit}"] = cr / per
    out["client KiB/read"] = crb / 1024 / max(cr, 1)
    (b0, t0), (b1, t1) = s0["machine"], s1["machine"]
    out["machine busy %"] = 100 * (b1 - b0) / max(t1 - t0, 1)
    out["steal %"] = 100 * (s1["steal"] - s0["steal"]) / max(t1 - t0, 1)
    out["softirq %"] = 100 * (s1["softirq"] - s0["softirq"]) / max(t1 - t0, 1)
    wall = s1["t"] - s0["t"]
    out["TCP MiB queued"] = s1["tcp_mem"] * 4096 / MiB
    for side, mib_queued in s1.get("queued", {}).items():
        out[f"MiB queued: {side}"] = mib_queued
    for who in ("proxy", "client", "backend"):
        (v0, i0), (v1, i1) = s0["switches"][who], s1["switches"][who]
        out[f"{who} sleeps/{unit}"] = (v1 - v0) / per
        out[f"{who} preempted/{unit}"] = (i1 - i0) / per
    out["proxy cores"] = sum(cpu.values()) / wall
    out["client cores"] = result["client_cpu_s"] / result["seconds"]
    out["backend cores"] = (s1["backend_cpu"] - s0["backend_cpu"]) / wall
    if perf and perf_out.exists():
        window = s1["t"] - s0["t"]
        for row in perf_out.read_text().splitlines():
            parts = row.split(",")
            if len(parts) > 2 and parts[0].strip().isdigit():
                name = parts[2].replace("syscalls:sys_enter_", "")
                # perf counted a little longer than the window: per second
                # of perf's run, times the window.
                out[f"{name}/{unit}"] = int(parts[0]) / per
        out["perf window s"] = window
        perf_out.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("many", "paced", "connect", "paced-connect"), default="many")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--consoles", type=int, default=None,
                        help="many, paced: consoles (100); connect: clients (10);"
                        " paced-connect: consoles a second (300)")
    parser.add_argument("--perf", action="store_true")
    parser.add_argument("--record", type=Path, default=None,
                        help="perf record -a -g each window into DIR/LABEL-ROUND.data")
    parser.add_argument("--system", action="append", default=[],
                        help="LABEL=TWISTD:WORKERS[+spin][@N] (default: this tree's x1 and"
                        " x2; +spin: a nice 19 busy loop per CPU beside it; @N: its own"
                        " --consoles)")
    args = parser.parse_args()
    consoles = args.consoles or {"connect": 10, "paced-connect": 300}.get(args.mode, 100)
    systems = []
    spinning: set[str] = set()
    own_consoles: dict[str, int] = {}
    for spec in args.system or [f"x1={run.TWISTD}:1", f"x2={run.TWISTD}:2"]:
        label, rest = spec.split("=", 1)
        twistd, workers = rest.rsplit(":", 1)
        if "@" in workers:
            # This system's own consoles (or clients, or rate).
            workers, own = workers.split("@")
            own_consoles[label] = int(own)
        if workers.endswith("+spin"):
            # A busy loop per CPU at nice 19 beside it: the machine kept busy
            # without taking CPU the measured processes want.
            spinning.add(label)
            workers = workers.removesuffix("+spin")
        systems.append((label, Path(twistd), int(workers)))
    run.raise_nofile()
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    rows: dict[str, list[dict]] = {label: [] for label, _, _ in systems}
    with tempfile.TemporaryDirectory(prefix="txvnc-ab-") as tmp:
        bench = Bench(Path(tmp), True)
        bench.start_backend()
        proxies = {}
        try:
            for label, twistd, workers in systems:
                run.TWISTD = twistd
                proxy = bench.start_txvnc(workers=workers)
                proxy.name = label
                proxies[label] = proxy
            time.sleep(1.0)
            for r in range(args.rounds):
                order = list(systems) if r % 2 == 0 else list(reversed(systems))
                for label, _, _ in order:
                    spinners = [
                        subprocess.Popen(
                            ["nice", "-n", "19", sys.executable, "-c", "while True: pass"]
                        )
                        for _ in range(os.cpu_count() or 1 if label in spinning else 0)
                    ]
                    try:
                        record = None
                        if args.record is not None:
                            args.record.mkdir(exist_ok=True)
                            record = args.record / f"{label}-{r}.data"
                        res = measure(bench, proxies[label], args.mode, args.seconds,
                                      own_consoles.get(label, consoles), args.perf,
                                      record)  # fmt: skip
                    finally:
                        for spinner in spinners:
                            spinner.kill()
                            spinner.wait()
                    rows[label].append(res)
                    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                      for k, v in res.items()}), flush=True)  # fmt: skip
        finally:
            for p in proxies.values():
                p.stop()
            bench.stop()
    keys = [k for k in rows[systems[0][0]][0] if k != "system"]
    for label, _, _ in systems:
        keys += [k for k in rows[label][0] if k not in keys and k != "system"]
    width = max(map(len, keys))
    first = systems[0][0]
    print(f"\nmedians of {args.rounds} rounds; {time.strftime('%H:%M:%S', time.gmtime())} UTC, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'':<{width}}  " + "  ".join(f"{lb:>10}" for lb, _, _ in systems)
          + "  " + "  ".join(f"{lb + '/' + first:>10}" for lb, _, _ in systems[1:]))  # fmt: skip
    for k in keys:
        meds = [statistics.median(r.get(k, 0) for r in rows[lb]) for lb, _, _ in systems]
        ratios = [f"{m / meds[0]:>10.2f}" if meds[0] else f"{'-':>10}" for m in meds[1:]]
        print(f"{k:<{width}}  " + "  ".join(f"{m:>10.3f}" for m in meds) + "  " + "  ".join(ratios))


if __name__ == "__main__":
    main()
