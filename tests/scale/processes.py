"""
Real txvnc processes for the scale tests: C{twistd txvnc} (with or without
workers) on fresh loopback ports, and helpers to mint tokens and open
consoles against it from this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.e2e.conftest import TWISTD, OutputWatcher, clean_env, free_port
from tests.proxy.harness import Browser

STOP_TIMEOUT = 30.0


def children(pid: int) -> list[int]:
    """The direct child processes of C{pid}."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@dataclass
class Txvnc:
    """A running C{twistd txvnc}; its log is watched line by line."""

    process: subprocess.Popen[str]
    log: OutputWatcher
    proxy_port: int
    api_url: str
    key: str

    async def mint(self, vnc_port: int, api_url: str | None = None) -> str:
        response = await treq.post(
            (api_url or self.api_url) + "/v1/tokens",
            json={"host": "127.0.0.1", "port": vnc_port, "ttl": 600},
            headers={"Authorization": "Bearer " + self.key},
        )
        assert response.code == 201, await response.text()
        return str((await response.json())["token"])

    async def wait_for(self, pattern: str, since: int = 0) -> Any:
        return await threads.deferToThread(self.log.wait_for, pattern, since)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(STOP_TIMEOUT)
        self.log.wait_closed(STOP_TIMEOUT)
        return code


def start_txvnc(
    directory: Path, *args: str, proxies: int = 1, key: str = "scale-test-key"
) -> Txvnc:
    """
    C{twistd -n txvnc ARGS} with the proxy and the token API on fresh
    loopback ports (unless ARGS says otherwise), a memory store, and an
    empty web directory; returns once the API and C{proxies} proxy
    processes listen.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "web").mkdir(exist_ok=True)
    key_file = directory / "api.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    proxy_port, api_port = free_port(), free_port()
    command = [
        str(TWISTD), "-n", "--pidfile=", "txvnc",
        "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
        "--api-listen", f"tcp:{api_port}:interface=127.0.0.1",
        "--api-key-file", str(key_file),
        "--store", "memory:",
        "--web", str(directory / "web"),
        # Test VNC servers listen on any free port.
        "--allowed-target", "127.0.0.1:1024-65535",
        *args,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=directory,
        env=clean_env(),
    )
    assert process.stdout is not None
    log = OutputWatcher(process.stdout, "twistd txvnc", directory / "twistd.log")
    server = Txvnc(process, log, proxy_port, f"http://127.0.0.1:{api_port}", key)
    try:
        if "--no-api" not in args:
            log.wait_for(rf"Site starting on {api_port}$")
        if proxies == 0:
            pass
        elif proxies == 1:
            log.wait_for(rf"ConsoleSite starting on {proxy_port}$")
        for n in range(1, proxies + 1 if proxies > 1 else 1):
            log.wait_for(rf"txvnc-worker-{n}\] ConsoleSite starting on {proxy_port}$")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return server


async def open_console(port: int, token: str, host: str = "127.0.0.1") -> Browser:
    """A WebSocket console on C{host:port} with C{token}, once open."""
    factory = WebSocketClientFactory(
        f"ws://{host}:{port}/websockify?token={token}", protocols=["binary"]
    )
    factory.protocol = Browser
    factory.noisy = False
    factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0)
    browser: Browser = await TCP4ClientEndpoint(reactor, host, port).connect(factory)
    await browser.opened
    return browser
