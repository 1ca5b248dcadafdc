"""
The proxy's own work per 64-byte round trip, without wake-ups.

    .venv/bin/python benchmarks/rtt_inproc.py [--n 20000] [--profile] [TXVNC OPTIONS]

txvnc's service runs in this process, and the load client and the echo
server are plain non-blocking sockets driven from the same thread between
the reactor's turns: send a masked 64-byte frame, turn the reactor until
the echo server has the payload, echo it, turn until the client has the
frame. Only the turns are timed, so the figure is the proxy's Python and
its recv/sendmsg system calls, with no sleep, no wake-up and no other
process in it (docs/performance.md, "Round trip: where the proxy's time
goes"). A turn is what Twisted's C{mainLoop} does once (or the loop
L{txvnc.ops.loop} installs), with a zero poll timeout.

Runs with the txvnc of the interpreter's environment, so a tree's own venv
measures that tree: `/work/wt-before/.venv/bin/python benchmarks/rtt_inproc.py`.
`--profile` prints the Python calls per round trip, by function.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import json
import os
import pstats
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import run as R

MASK = b"\x01\x02\x03\x04"
PAYLOAD = b"\x42" * 64
FRAME = (
    bytes([0x82, 0x80 | 64])
    + MASK
    + bytes(c ^ MASK[i % 4] for i, c in enumerate(PAYLOAD))
)
WARM_UP = 2000


def nodelay(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    a, txvnc_args = ap.parse_known_args()



    tmp = Path(tempfile.mkdtemp())
    bench = R.Bench(tmp, True)
    bench.start_backend()  # the token endpoint
    try:
        measure(bench, tmp, a, txvnc_args)
    finally:
        bench.stop()


def measure(
    bench: R.Bench, tmp: Path, a: argparse.Namespace, txvnc_args: list[str]
) -> None:
    from twisted.internet import reactor

    from txvnc.tap import Options, makeService

    echo_listener = socket.socket()
    echo_listener.bind(("127.0.0.1", 0))
    echo_listener.listen(8)
    echo_listener.setblocking(False)
    echo_port = echo_listener.getsockname()[1]

    port = R.free_port()
    key = tmp / "api.key"
    key.write_text("bench-key-" + os.urandom(12).hex() + "\n")
    key.chmod(0o600)
    (tmp / "web").mkdir()
    options = Options()
    options.parseOptions([
        "--no-api", "--consoleauth-url", f"http://127.0.0.1:{bench.backend['tokens']}",
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--api-key-file", str(key),
        "--web", str(tmp / "web"), "--allowed-target", "127.0.0.1:1024-65535",
        *txvnc_args,
    ])  # fmt: skip
    service = makeService(options)
    service.startService()
    reactor.startRunning(installSignalHandlers=False)
    turn = getattr(reactor.mainLoop, "turn", None)
    if turn is None:

        def turn() -> None:
            # Twisted's mainLoop, once, without blocking.
            reactor.runUntilCurrent()
            reactor.timeout()
            reactor.doIteration(0)

    client = nodelay(socket.create_connection(("127.0.0.1", port)))
    ws_key = base64.b64encode(os.urandom(16)).decode()
    client.send(
        f"GET /websockify?token={echo_port}-x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: binary\r\n"
        f"Sec-WebSocket-Key: {ws_key}\r\n\r\n".encode()
    )
    answer = b""
    echo = None
    deadline = time.monotonic() + 20
    while (b"\r\n\r\n" not in answer or echo is None) and time.monotonic() < deadline:
        reactor.iterate(0.001)
        try:
            answer += client.recv(65536)
        except BlockingIOError:
            pass
        if echo is None:
            try:
                echo = nodelay(echo_listener.accept()[0])
            except BlockingIOError:
                pass
    assert echo is not None and answer.startswith(b"HTTP/1.1 101"), answer
    for _ in range(50):
        reactor.iterate(0.001)
    try:
        client.recv(65536)
    except BlockingIOError:
        pass

    def pump(sock: socket.socket, want: int) -> tuple[bytes, float, int]:
        got = b""
        turns = 0
        spent = 0.0
        while len(got) < want:
            t0 = time.perf_counter()
            turn()
            spent += time.perf_counter() - t0
            turns += 1
            try:
                got += sock.recv(65536)
            except BlockingIOError:
                pass
            if turns > 1000:
                raise RuntimeError("no answer through the proxy")
        return got, spent, turns

    def round_trip() -> tuple[float, int]:
        client.send(FRAME)
        got, t1, n1 = pump(echo, len(PAYLOAD))
        echo.send(got)
        _, t2, n2 = pump(client, len(PAYLOAD) + 2)
        return t1 + t2, n1 + n2

    for _ in range(WARM_UP):
        round_trip()
    times = []
    turns = 0
    profile = cProfile.Profile() if a.profile else None
    if profile:
        profile.enable()
    for _ in range(a.n):
        spent, n = round_trip()
        times.append(spent * 1e6)
        turns += n
    if profile:
        profile.disable()
    times.sort()
    print(json.dumps({
        "median_us": round(statistics.median(times), 2),
        "p10_us": round(times[len(times) // 10], 2),
        "p90_us": round(times[len(times) * 9 // 10], 2),
        "max_us": round(times[-1], 2),
        "turns_per_rt": turns / a.n,
        "load": os.getloadavg()[0],
    }), flush=True)  # fmt: skip
    if profile:
        stats = pstats.Stats(profile)
        rows = sorted(
            (
                (nc / a.n, f"{Path(file).name}:{line} {name}")
                for (file, line, name), (_, nc, *_) in stats.stats.items()
            ),  # type: ignore[attr-defined]
            reverse=True,
        )
        total = sum(c for c, _ in rows)
        print(f"Python calls per round trip: {total:.1f} (the driver's own included)")
        for calls, name in rows:
            if calls >= 0.5:
                print(f"{calls:8.2f}  {name}")


if __name__ == "__main__":
    try:
        main()
    finally:
        # The service started threads and signal handlers: leave at once,
        # also when something failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if sys.exc_info()[0] is None else 1)
