"""
The control traffic at scale: one token API, the console reports of many
simulated proxies, and revocation matching in one proxy, before and after
change reports and indexes.

    .venv/bin/python benchmarks/control.py [--proxies 100] [--consoles 10000]
        [--churn 3] [--seconds 10] [--store URL]

Every proxy holds C{--consoles} consoles and opens and closes C{--churn}
a second. Before: each reports its whole list (about 300 bytes a console)
whenever a console opened or closed, at most once a second, so once a
second here. After: each sent its whole list once (at start, not measured)
and from then on sends, once a second, what changed with the digest of
what it holds (C{PATCH /v1/proxies/NODE/sessions}).

The API is a real C{twistd txvnc --no-proxy} on 127.0.0.1 (run with the
project's .venv). The simulated proxies send from this process over
persistent HTTP connections; the API's CPU time comes from /proc. The
"before" load is far more than one API process can take (hundreds of MB
a second), so it is measured as the API's CPU per whole report, sent
back to back for C{--seconds}, and scaled to the schedule; "after" is sent
on the schedule and measured as it is.

Revocation matching is measured in-process: one feed entry against the
consoles of one proxy, scanning them all (before) and through the index
(after).

Prints one table. Run by hand (or C{make bench-control}); not part of
C{make bench}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TWISTD = ROOT / ".venv" / "bin" / "twistd"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from run import cpu_seconds, free_port, raise_nofile, wait_listening  # noqa: E402

from txvnc.core.digest import RunningDigest  # noqa: E402
from txvnc.proxy.revocation import ConsoleIndex, matches  # noqa: E402

KEY = "control-bench-" + "k" * 32


def console(n: int, cid: str | None = None) -> dict:
    """Console C{n} as a proxy reports it (about 300 bytes of JSON)."""
    return {
        "id": cid or "req-" + str(uuid.UUID(int=random.getrandbits(128))),
        "instance_uuid": str(uuid.UUID(int=n)),
        "token_hash": f"{n:064x}",
        "client": f"198.51.100.{n % 250}:{40000 + n % 20000}",
        "host": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
        "port": 5900 + n % 100,
        "opened_at": 1.8e9 + n,
        "bytes_to_vnc": 123456,
        "bytes_from_vnc": 98765432,
    }


class Proxy:
    """One simulated proxy: its consoles, its digest, its connection."""

    def __init__(self, node: str, count: int) -> None:
        self.node = node
        # Ids only (a million full consoles would not fit beside the API):
        # the rest of each console is made from its number when sent.
        self.consoles: dict[str, int] = {}
        self.digest = RunningDigest()
        for n in range(count):
            cid = console(n)["id"]
            self.consoles[cid] = n
            self.digest.add(cid)
        self.serial = count
        self.sent = 0

    def connect(self, port: int, api_pid: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.api_pid = api_pid

    def send(self, method: str, body: dict) -> int:
        data = json.dumps(body).encode()
        for attempt in (1, 2):
            try:
                self.conn.request(
                    method,
                    f"/v1/proxies/{self.node}/sessions",
                    body=data,
                    headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
                )
                answer = self.conn.getresponse()
                answer.read()
                break
            except (OSError, http.client.HTTPException):
                # The API closed a connection left idle past its timeout.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 2:
                    raise
        self.sent += len(data)
        return answer.status

    def whole(self, ttl: int = 30) -> int:
        sessions = [console(n, cid) for cid, n in self.consoles.items()]
        return self.send("PUT", {"ttl": ttl, "sessions": sessions})

    def changes(self, churn: int) -> int:
        gone = random.sample(list(self.consoles), churn)
        for cid in gone:
            del self.consoles[cid]
            self.digest.remove(cid)
        added = []
        for _ in range(churn):
            c = console(self.serial)
            self.consoles[c["id"]] = self.serial
            self.serial += 1
            self.digest.add(c["id"])
            added.append(c)
        body = {"ttl": 30, "added": added, "removed": gone, "digest": str(self.digest)}
        return self.send("PATCH", body)


def start_api(tmp: Path, store: str, twistd: Path) -> tuple[subprocess.Popen[bytes], int]:
    keys = tmp / "keys"
    keys.write_text(f"admin,proxy {KEY}\n")
    keys.chmod(0o600)
    port = free_port()
    log = (tmp / "api.log").open("wb")
    proc = subprocess.Popen(
        [
            str(twistd), "-n", "--pidfile=", "txvnc", "--no-proxy",
            "--api-listen", f"tcp:{port}:interface=127.0.0.1",
            "--api-key-file", str(keys), "--store", store,
            "--base-url", "http://127.0.0.1:1",
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
        start_new_session=True,
    )
    wait_listening(port, proc)
    return proc, port


def before(proxies: list[Proxy], seconds: float) -> dict:
    """Whole lists back to back, four senders at once: API CPU per report."""
    reports, sent0 = 0, sum(p.sent for p in proxies)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    pid = proxies[0].api_pid
    cpu0, t0 = cpu_seconds(pid), time.monotonic()

    def sender(mine: list[Proxy]) -> None:
        nonlocal reports
        i = 0
        while time.monotonic() < deadline:
            status = mine[i % len(mine)].whole()
            assert status == 204, status
            with lock:
                reports += 1
            i += 1

    threads = [threading.Thread(target=sender, args=(proxies[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    sent = sum(p.sent for p in proxies) - sent0
    return {"reports": reports, "cpu_per_report": cpu / reports, "bytes_per_report": sent / reports, "wall": wall}


def after(proxies: list[Proxy], seconds: float, churn: int) -> dict:
    """Every proxy's changes once a second, on schedule."""
    pid = proxies[0].api_pid
    sent0 = sum(p.sent for p in proxies)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    late = resent = 0
    for tick in range(int(seconds)):
        for p in proxies:
            status = p.changes(churn)
            if status == 409:
                # What a proxy does: the API's copy differs, send it all.
                resent += 1
                status = p.whole()
            assert status == 204, status
        wait = t0 + tick + 1 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            late += 1
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    sent = sum(p.sent for p in proxies) - sent0
    return {
        "bytes_per_s": sent / wall, "cpu_per_s": cpu / wall, "late_ticks": late,
        "resent": resent, "wall": wall,
    }


class FakeConsole:
    def __init__(self, c: dict) -> None:
        self.conn_id = c["id"]
        self.token_hash = c["token_hash"]
        self.instance_uuid = c["instance_uuid"]
        self.revocation_cursor = 0

    def revoke(self, kind: str) -> None:
        pass


def matching(count: int) -> tuple[float, float]:
    """Microseconds to match one feed entry against C{count} consoles: scan, index."""
    consoles = [FakeConsole(console(i)) for i in range(count)]
    index = ConsoleIndex()
    for c in consoles:
        index.add(c)
    value = consoles[count // 2].token_hash
    rounds = 50
    t = time.perf_counter()
    for _ in range(rounds):
        hit = [c for c in consoles if matches(c, "token", value, 1)]
    scan = (time.perf_counter() - t) / rounds
    t = time.perf_counter()
    for _ in range(rounds * 100):
        hit2 = [c for c in index.named("token", value) if matches(c, "token", value, 1)]
    indexed = (time.perf_counter() - t) / (rounds * 100)
    assert len(hit) == len(hit2) == 1
    return scan * 1e6, indexed * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxies", type=int, default=100)
    parser.add_argument("--consoles", type=int, default=10_000)
    parser.add_argument("--churn", type=int, default=3, help="consoles opened and closed a second, per proxy")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--before-twistd", type=Path, default=TWISTD,
        help="twistd of the API the whole lists go to (another checkout's .venv/bin/twistd: the API as it was)",
    )
    parser.add_argument("--store", default="", help="the API's --store (default: SQLite in a temporary directory)")
    args = parser.parse_args()
    raise_nofile()
    random.seed(17)
    old: dict = {}
    new: dict = {}
    print(f"building {args.proxies} proxies x {args.consoles} consoles ...", file=sys.stderr)
    proxies = [Proxy(f"proxy-{i:03d}", args.consoles) for i in range(args.proxies)]
    with tempfile.TemporaryDirectory(prefix="txvnc-control-") as tmp:
        for phase, twistd in (("before", args.before_twistd), ("after", TWISTD)):
            work = Path(tmp) / phase
            work.mkdir()
            store = args.store or f"sqlite:{work}/control.sqlite"
            proc, port = start_api(work, store, twistd)
            try:
                for p in proxies:
                    p.connect(port, proc.pid)
                if phase == "before":
                    print("before: whole lists back to back ...", file=sys.stderr)
                    old = before(proxies, args.seconds)
                    print(f"  {old}", file=sys.stderr)
                else:
                    # Every proxy's whole list once (as after a start), then changes.
                    # (A long ttl: sending them all takes longer than 30 s.)
                    for p in proxies:
                        assert p.whole(ttl=3600) == 204
                    print("after: changes on schedule ...", file=sys.stderr)
                    new = after(proxies, args.seconds, args.churn)
                    print(f"  {new}", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(20)
    scan_us, index_us = matching(args.consoles)
    n = args.proxies
    need_bytes = old["bytes_per_report"] * n
    need_cpu = old["cpu_per_report"] * n
    rows = [
        ("figure", "before (whole lists)", "after (changes + digest)", "after/before"),
        ("into the API, bytes/s", f"{need_bytes / 1e6:,.1f} MB/s", f"{new['bytes_per_s'] / 1e3:,.1f} KB/s",
         f"{new['bytes_per_s'] / need_bytes:.5f}"),
        ("API CPU, cores", f"{need_cpu:,.2f}", f"{new['cpu_per_s']:.3f}", f"{new['cpu_per_s'] / need_cpu:.4f}"),
        ("per proxy report, bytes", f"{old['bytes_per_report']:,.0f}", f"{new['bytes_per_s'] / n:,.0f}", ""),
        ("per proxy report, API CPU ms", f"{old['cpu_per_report'] * 1e3:.1f}", f"{new['cpu_per_s'] / n * 1e3:.2f}", ""),
        ("revocation entry vs one proxy's consoles, µs", f"{scan_us:,.0f}", f"{index_us:.1f}", f"{index_us / scan_us:.5f}"),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for i, r in enumerate(rows):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print(
        f"\n{n} proxies x {args.consoles:,} consoles, {args.churn} opened and closed a "
        f"second each, store {args.store or 'sqlite'}. Before: {old['reports']} whole reports sent "
        f"back to back in {old['wall']:.1f}s, scaled to one a second a proxy. After: "
        f"{new['wall']:.1f}s on schedule, {new['late_ticks']} seconds late, "
        f"{new['resent']} whole lists resent after a 409. "
        f"Load average {os.getloadavg()[0]:.1f}."
    )


if __name__ == "__main__":
    main()
