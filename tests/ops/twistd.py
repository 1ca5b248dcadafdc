"""
A real C{twistd -n txvnc} child process driven from a pytest-twisted test:
its log lines can be awaited and its exit status read, all as Deferreds.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from tests.e2e.conftest import NOVNC, clean_env, free_port

BIN = Path(sys.executable).parent
TWISTD = BIN / "twistd"


class TwistdProcess(ProcessProtocol):
    """
    Collects the child's output line by line; L{wait_for} a line, L{ended}
    for the exit status.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = b""
        self._waiters: list[tuple[re.Pattern[str], int, Deferred]] = []
        self.ended: Deferred = Deferred()
        self.exit_code: int | None = None

    def outReceived(self, data: bytes) -> None:
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self.lines.append(raw.decode("utf-8", "replace"))
        self._check()

    errReceived = outReceived

    def _check(self) -> None:
        for waiter in list(self._waiters):
            pattern, since, d = waiter
            for line in self.lines[since:]:
                found = pattern.search(line)
                if found:
                    self._waiters.remove(waiter)
                    d.callback(found)
                    break

    def mark(self) -> int:
        return len(self.lines)

    def wait_for(self, pattern: str, since: int = 0) -> Deferred:
        d: Deferred = Deferred()
        self._waiters.append((re.compile(pattern), since, d))
        self._check()
        return d

    def text(self) -> str:
        return "\n".join(self.lines)

    def processEnded(self, reason) -> None:
        self.exit_code = reason.value.exitCode
        if reason.value.signal is not None:
            self.exit_code = -reason.value.signal
        for _, _, d in self._waiters:
            d.errback(AssertionError(f"twistd ended first; its log:\n{self.text()}"))
        self._waiters = []
        self.ended.callback(self.exit_code)


async def start_twistd(
    directory: Path,
    *args: str,
    env: dict[str, str] | None = None,
    listen: str = "tcp:{port}:interface=127.0.0.1",
    api_listen: str = "tcp:{port}:interface=127.0.0.1",
    scheme: str = "http",
) -> tuple[TwistdProcess, int, int]:
    """
    Start twistd txvnc (proxy and API, memory store) on fresh loopback
    ports with extra C{args}; (process, proxy port, API port) once both
    listen.
    """
    for _ in range(5):
        proxy_port, api_port = free_port(), free_port()
        if proxy_port == api_port:
            continue
        process = TwistdProcess()
        reactor.spawnProcess(
            process,
            str(TWISTD),
            [
                str(TWISTD), "-n", "--pidfile=", "txvnc",
                "--listen", listen.format(port=proxy_port),
                "--api-listen", api_listen.format(port=api_port),
                "--api-key-file", str(directory / "api.key"),
                "--secret-key-file", str(directory / "secret.key"),
                "--store", "memory:",
                "--base-url", f"{scheme}://127.0.0.1:{proxy_port}",
                "--novnc", str(NOVNC),
                # Test VNC servers listen on any free port.
                "--allowed-target", "127.0.0.1:1024-65535",
                *args,
            ],
            env=env or clean_env(),
            path=str(directory),
        )
        ready = process.wait_for(rf"starting on {proxy_port}\b")
        try:
            await ready
            await process.wait_for(rf"starting on {api_port}\b")
            await process.wait_for(r"signals: SIGTERM shuts down gracefully")
        except AssertionError:
            if "Address already in use" in process.text():
                continue
            raise
        return process, proxy_port, api_port
    raise AssertionError("every port we picked was taken before twistd bound it")
