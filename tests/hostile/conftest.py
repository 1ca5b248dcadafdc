"""
Real processes for the hostile suite: C{twistd txvnc} on loopback, a
stand-in VNC server (L{tests.hostile.backend}), and helpers to mint tokens,
open consoles, read the proxy's memory and check its log.

Every twistd log is kept under pytest's temporary directory; when the
session ends, none may hold a token, an API key or a VNC password
(C{tests/logscan.py}, checked by the root conftest).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import resource
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.conftest import (
    NOVNC,
    STOP_TIMEOUT,
    TWISTD,
    OutputWatcher,
    _require,
    _stop,
    clean_env,
    free_port,
)
from tests.hostile.wsclient import Response, WSClient
from tests.logscan import SECRETS

HERE = Path(__file__).resolve().parent


#: Lines a twistd log must not have after ordinary garbage.
LOUD = re.compile(r"#(error|critical)\]|Traceback|Unhandled")

T = TypeVar("T")

def run(coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    """
    Run one coroutine to its end on a fresh asyncio loop, bounded.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())

def raise_open_files_limit() -> None:
    """
    Let this process (and its children) open as many sockets as allowed.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

# The stand-in VNC server

@dataclass
class Backend:
    process: subprocess.Popen[str]
    log: OutputWatcher
    port: int

    def go(self, tag: str) -> None:
        """
        Let a held STREAM start reading.
        """
        assert self.process.stdin is not None
        self.process.stdin.write(f"go {tag}\n")
        self.process.stdin.flush()

    def wait(self, event: str, tag: str, since: int = 0, timeout: float = 60) -> str:
        """
        The backend's C{event} line for C{tag}, waiting for it.
        """
        return self.log.wait_for(
            rf"^{event} {re.escape(tag)}( |$)", since, timeout
        ).string

@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """
    One stand-in VNC server for the module.
    """
    raise_open_files_limit()
    directory = tmp_path_factory.mktemp("backend")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "backend.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert process.stdout is not None
    log = OutputWatcher(process.stdout, "backend", directory / "backend.log")
    port = int(log.wait_for(r"^listening (\d+)$").group(1))
    yield Backend(process, log, port)
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

# twistd txvnc

@dataclass
class Twistd:
    """
    A running C{twistd -n txvnc}; C{proxy_port} or C{api_port} is 0 when that
    side does not run in it.
    """

    process: subprocess.Popen[str]
    log: OutputWatcher
    directory: Path
    proxy_port: int
    api_port: int
    key_file: Path
    #: The client TLS context for a proxy listening with ssl:.
    tls: ssl.SSLContext | None = None
    _http: http.client.HTTPConnection | None = field(default=None, repr=False)
    _http_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def api_key(self) -> str:
        return self.key_file.read_text().strip()

    def mint(self, host: str, port: int, **fields: Any) -> str:
        """
        A fresh token for C{host:port} from this process's token API (safe
        to call from several threads).
        """
        with self._http_lock:
            return self._mint(host, port, **fields)

    def _mint(self, host: str, port: int, **fields: Any) -> str:
        body = json.dumps({"host": host, "port": port, **fields})
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
        }
        for attempt in range(2):
            if self._http is None:
                self._http = http.client.HTTPConnection(
                    "127.0.0.1", self.api_port, timeout=30
                )
            try:
                self._http.request("POST", "/v1/tokens", body, headers)
                response = self._http.getresponse()
                answer = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self._http.close()
                self._http = None  # the API closed an idle connection: again
                if attempt:
                    raise
        assert response.status == 201, f"minting failed: {response.status} {answer!r}"
        token = str(json.loads(answer)["token"])
        SECRETS.add(token)
        return token

    def rss_kib(self) -> int:
        """
        The process's resident memory, from /proc.
        """
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
        assert found, status
        return int(found.group(1))

    def loud_lines(self, since: int = 0) -> list[str]:
        """
        Error-level lines and tracebacks logged from C{since} on.
        """
        return [line for line in self.log.lines(since) if LOUD.search(line)]

    def close_reason(self, client_port: int, since: int = 0) -> str:
        """
        Why the proxy says the console of the browser at C{client_port}
        closed, from its close line (waiting for it).
        """
        found = self.log.wait_for(
            rf"127\.0\.0\.1:{client_port}: console closed, instance \S+, "
            r"target \S+: (.*); \d+ bytes to VNC",
            since,
        )
        return found.group(1)

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
        code = _stop(self.process)
        self.log.wait_closed(STOP_TIMEOUT)
        text = self.log.text()
        assert code in (0, -signal.SIGTERM), f"twistd exited with {code}:\n{text}"
        assert "Server Shut Down." in text, f"twistd did not stop cleanly:\n{text}"
        assert "Traceback" not in text, f"twistd logged a traceback:\n{text}"

def start_twistd(
    directory: Path,
    *args: str,
    proxy: bool = True,
    api: bool = True,
    listen: str = "tcp:{port}:interface=127.0.0.1",
) -> Twistd:
    """
    Start C{twistd -n txvnc ARGS} on fresh ports and wait until it listens;
    tries new ports when one was taken under it.

    @param listen: the proxy's endpoint, C{{port}} standing for its port.
    """
    _require(TWISTD.is_file(), f"twistd in {Path(sys.executable).parent}")
    _require((NOVNC / "core" / "rfb.js").is_file(), f"noVNC in {NOVNC} (npm ci)")
    raise_open_files_limit()
    key_file = directory / "txvnc-api.key"
    for attempt in range(5):
        proxy_port = free_port() if proxy else 0
        api_port = free_port() if api else 0
        if proxy and api and proxy_port == api_port:
            continue
        argv = [str(TWISTD), "-n", "--pidfile=", "txvnc", "--api-key-file", str(key_file)]
        # The backends listen on any free port; the hostile clients fail
        # token checks on purpose, far more than the brute-force guard allows
        # (the guard has its own tests in tests/proxy).
        argv += ["--allowed-target", "127.0.0.1:1024-65535", "--max-auth-failures", "0"]
        if proxy:
            argv += [
                "--listen", listen.format(port=proxy_port),
                "--novnc", str(NOVNC),
            ]
        else:
            argv.append("--no-proxy")
        if api:
            argv += [
                "--api-listen", f"tcp:{api_port}:interface=127.0.0.1",
                "--store", "memory:",
                "--base-url", f"http://127.0.0.1:{proxy_port or 1}",
            ]
        else:
            argv.append("--no-api")
        argv += args
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=directory,
            env=clean_env(),
        )
        assert process.stdout is not None
        log_path = directory / f"twistd-{attempt}.log"
        log = OutputWatcher(process.stdout, "twistd txvnc", log_path)
        server = Twistd(process, log, directory, proxy_port, api_port, key_file)
        try:
            taken = False
            for port in (p for p in (api_port, proxy_port) if p):
                found = log.wait_for_any(
                    [rf"Site (\(TLS\) )?starting on {port}$", r"CannotListenError"],
                    stop_at_end=False,
                )
                if found is None or found.group(0) == "CannotListenError":
                    code = process.wait(STOP_TIMEOUT)
                    log.wait_closed(STOP_TIMEOUT)
                    if re.search(r"Couldn't listen on .*in use", log.text()):
                        taken = True
                        break
                    raise AssertionError(
                        f"twistd txvnc exited with {code}:\n{log.text()}"
                    )
        except BaseException:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise
        if not taken:
            SECRETS.add(server.api_key)
            secret_key = directory / "txvnc-secret.key"
            if secret_key.exists():
                SECRETS.add(secret_key.read_text().strip())
            return server
    raise AssertionError("every port we picked was taken before twistd bound it")

@pytest.fixture(scope="module")
def txvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    One C{twistd txvnc} (proxy and API) for the module; it must stop cleanly.
    """
    server = start_twistd(tmp_path_factory.mktemp("txvnc"))
    yield server
    server.stop()

# Consoles

async def open_console(
    server: Twistd,
    backend: Backend,
    command: str,
    path: str | None = None,
    token: str | None = None,
) -> tuple[WSClient, Response]:
    """
    A console to the backend whose first line is C{command}; the response
    must be 101.
    """
    if token is None:
        token = await asyncio.to_thread(server.mint, "127.0.0.1", backend.port)
    client, response = await WSClient.connect(
        "127.0.0.1",
        server.proxy_port,
        path or f"/websockify?token={token}",
        tls=server.tls,
    )
    assert response.status == 101, f"upgrade refused: {response}"
    client.send_frame(command.encode() + b"\n")
    return client, response


async def echo_check(server: Twistd, backend: Backend, tag: str) -> None:
    """
    A good console opened now works: what is sent comes back.
    """
    client, _ = await open_console(server, backend, f"ECHO {tag}")
    try:
        for size in (1, 1000, 100_000):
            data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            client.send_frame(data)
            got = b""
            while len(got) < len(data):
                frame = await client.read_frame()
                got += frame.payload
            assert got == data
    finally:
        client.close()

def report_log(
    item: pytest.Item, report: pytest.TestReport, names: tuple[str, ...]
) -> None:
    for name in names:
        server = getattr(item, "funcargs", {}).get(name)
        if isinstance(server, Twistd):
            report.sections.append((f"{name} log", server.log.text()))

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """
    Show twistd's log under any failing test that used it.
    """
    report = yield
    if report.failed:
        report_log(item, report, ("txvnc", "proxy", "api"))
    return report

Waiter = Callable[..., str]
