"""
Is splice(2) cheaper than recv + sendmsg for the download's relay?

Three processes on loopback: a source that sends as fast as it can, a
relay (the part measured), and a sink that reads and throws away. The
relay is a nonblocking epoll loop, as the proxy is: on each readable event
it moves one read's worth to the other socket as one unmasked binary
WebSocket frame (header beside the payload), keeps what the other socket
did not take and pauses reading until it went out.

  copy:   recv(READ) into a new bytes object, sendmsg([header, payload])
  splice: splice(socket -> pipe, READ), send(header, MSG_MORE),
          splice(pipe -> socket); what did not go out is read back out of
          the (one, shared) pipe, so the pipe is empty after every event

Prints, per mode: MB/s, CPU ms per MiB of the relay, of the sink and of
all three processes, and the sink's reads per MiB. Modes alternate order
each round. Not part of `run.py`: a probe for docs/performance.md
("Download: splice").

    python benchmarks/splice_probe.py [--seconds 3] [--rounds 3] [--read 126976]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import resource
import select
import socket
import statistics
import sys
import time

F_SETPIPE_SZ = 1031
MIB = 1024 * 1024


def header(length: int) -> bytes:
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return bytes((0x82, 126)) + length.to_bytes(2, "big")
    return bytes((0x82, 127)) + length.to_bytes(8, "big")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def source(sock: socket.socket, stop: float) -> int:
    chunk = b"x" * MIB
    view = memoryview(chunk)
    sent = 0
    while time.monotonic() < stop:
        sent += sock.send(view)
    return sent


def sink(sock: socket.socket) -> int:
    buf = bytearray(MIB)
    got = 0
    reads = 0
    while True:
        n = sock.recv_into(buf)
        if not n:
            return reads
        got += n
        reads += 1


def relay(a: socket.socket, b: socket.socket, mode: str, read: int) -> int:
    a.setblocking(False)
    b.setblocking(False)
    ep = select.epoll()
    ep.register(a.fileno(), select.EPOLLIN)
    ep.register(b.fileno(), 0)
    pending: list[bytes] = []
    moved = 0
    if mode == "splice":
        pr, pw = os.pipe()
        try:
            fcntl.fcntl(pw, F_SETPIPE_SZ, MIB)
        except OSError:
            pass
    afd, bfd = a.fileno(), b.fileno()
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    eof = False
    while not (eof and not pending):
        for fd, _event in ep.poll():
            if fd == bfd:
                data = b"".join(pending)
                pending.clear()
                try:
                    n = b.send(data)
                except BlockingIOError:
                    n = 0
                if n < len(data):
                    pending.append(data[n:])
                else:
                    ep.modify(bfd, 0)
                    ep.modify(afd, select.EPOLLIN)
                continue
            if mode == "copy":
                try:
                    data = a.recv(read)
                except BlockingIOError:
                    continue
                if not data:
                    eof = True
                    ep.modify(afd, 0)
                    continue
                moved += len(data)
                chunks = [header(len(data)), data]
                try:
                    sent = b.sendmsg(chunks)
                except BlockingIOError:
                    sent = 0
                total = len(chunks[0]) + len(data)
                if sent < total:
                    pending.append(b"".join(chunks)[sent:])
            else:
                try:
                    n = os.splice(afd, pw, read, flags=flags)
                except BlockingIOError:
                    continue
                if not n:
                    eof = True
                    ep.modify(afd, 0)
                    continue
                moved += n
                head = header(n)
                try:
                    hs = b.send(head, socket.MSG_MORE)
                except BlockingIOError:
                    hs = 0
                left = n
                if hs == len(head):
                    while left:
                        try:
                            m = os.splice(pr, bfd, left, flags=flags)
                        except BlockingIOError:
                            break
                        if not m:
                            break
                        left -= m
                else:
                    pending.append(head[hs:])
                if left:
                    rest = []
                    while left:
                        chunk = os.read(pr, left)
                        rest.append(chunk)
                        left -= len(chunk)
                    pending.append(b"".join(rest))
            if pending:
                ep.modify(afd, 0)
                ep.modify(bfd, select.EPOLLOUT)
    b.shutdown(socket.SHUT_WR)
    return moved


def pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


def run(mode: str, seconds: float, read: int) -> tuple[float, ...]:
    src_out, relay_in = pair()
    relay_out, sink_in = pair()
    r, w = os.pipe()
    pids = []
    start = time.monotonic()
    for role in ("source", "relay", "sink"):
        pid = os.fork()
        if pid == 0:
            mine = {
                "source": (src_out,),
                "relay": (relay_in, relay_out),
                "sink": (sink_in,),
            }[role]
            for s in (src_out, relay_in, relay_out, sink_in):
                if s not in mine:
                    s.close()
            before = cpu()
            if role == "source":
                n = source(src_out, start + seconds)
                src_out.close()
            elif role == "relay":
                n = relay(relay_in, relay_out, mode, read)
            else:
                n = sink(sink_in)
            os.write(w, f"{role} {n} {cpu() - before}\n".encode())
            os._exit(0)
        pids.append(pid)
    for s in (src_out, relay_in, relay_out, sink_in):
        s.close()
    os.close(w)
    for pid in pids:
        os.waitpid(pid, 0)
    elapsed = time.monotonic() - start
    out = {}
    for line in os.fdopen(r).read().splitlines():
        role, n, c = line.split()
        out[role] = (int(n), float(c))
    mib = out["relay"][0] / MIB
    total = sum(c for _, c in out.values())
    return (
        mib * MIB / elapsed / 1e6,
        out["relay"][1] * 1000 / mib,
        out["sink"][1] * 1000 / mib,
        total * 1000 / mib,
        out["sink"][0] / mib,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--read", type=int, default=124 * 1024)
    p.add_argument("--modes", default="copy,splice")
    args = p.parse_args()
    results: dict[str, list[tuple[float, ...]]] = {}
    modes = args.modes.split(",")
    for i in range(args.rounds):
        order = modes if i % 2 == 0 else modes[::-1]
        for mode in order:
            results.setdefault(mode, []).append(run(mode, args.seconds, args.read))
    print(f"read size {args.read}, {args.rounds} rounds of {args.seconds} s, medians")
    print(
        f"{'mode':8} {'MB/s':>8} {'relay ms/MiB':>13} {'sink ms/MiB':>12}"
        f" {'all ms/MiB':>11} {'sink reads/MiB':>15}"
    )
    for mode, rs in results.items():
        rate, relay_cpu, sink_cpu, total, reads = (
            statistics.median(x) for x in zip(*rs, strict=True)
        )
        print(
            f"{mode:8} {rate:8.0f} {relay_cpu:13.3f} {sink_cpu:12.3f}"
            f" {total:11.3f} {reads:15.1f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
