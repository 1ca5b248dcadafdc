"""
Real processes for the hostile suite: C{twistd txvnc} on loopback
(L{tests.support.twistd}, always with L{NO_GUARD}), a stand-in VNC server
(L{tests.hostile.backend}), and helpers to open consoles.

Every twistd log is kept under pytest's temporary directory; when the
session ends, none may hold a token, an API key or a VNC password
(L{tests.support.logscan}, checked by the root conftest).
"""

from __future__ import annotations

import asyncio
import re
import resource
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.hostile.wsclient import Response, WSClient
from tests.support.processes import STOP_TIMEOUT, OutputWatcher, spawn, stop
from tests.support.twistd import Twistd, start_twistd

HERE = Path(__file__).resolve().parent

#: Arguments of every hostile twistd: no brute-force guard, since the
#: hostile clients fail token checks on purpose far more than it allows
#: (the guard has its own tests in tests/proxy).
NO_GUARD = ("--max-auth-failures", "0")

T = TypeVar("T")

def run(coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    """
    Run one coroutine to its end on a fresh asyncio loop, bounded.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())

@pytest.fixture(scope="session", autouse=True)
def raise_open_files_limit() -> None:
    """
    Let this process (and its children: the backend, every twistd) open as
    many sockets as allowed.
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
    directory = tmp_path_factory.mktemp("backend")
    process = spawn(
        [sys.executable, str(HERE / "backend.py")], stdin=True, stderr=None
    )
    assert process.stdout is not None and process.stdin is not None
    log = OutputWatcher(process.stdout, "backend", directory / "backend.log")
    try:
        port = int(log.wait_for(r"^listening (\d+)$").group(1))
        yield Backend(process, log, port)
    finally:
        # It ends when its stdin does; SIGTERM, then SIGKILL, if not.
        process.stdin.close()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop(process, must_obey=False)

# twistd txvnc

@pytest.fixture(scope="module")
def txvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    One C{twistd txvnc} (proxy and API) for the module; it must stop cleanly.
    """
    server = start_twistd(tmp_path_factory.mktemp("txvnc"), *NO_GUARD)
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

Waiter = Callable[..., str]
