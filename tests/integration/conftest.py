"""
A small txvnc cluster of real processes: two C{twistd txvnc --no-proxy} token
APIs sharing one real Redis, and two C{twistd txvnc --no-api} proxies, one
asking each API. The keys file gives the control plane an admin key and the
proxies a proxy key.

Every token and key the tests use is remembered, and after the module every
log line of every process (and every audit log) is searched for them.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    NOVNC,
    STOP_TIMEOUT,
    TWISTD,
    OutputWatcher,
    _stop,
    clean_env,
    free_port,
)
from tests.redis_server import RedisServer

ADMIN_KEY = "cluster-admin-key-" + "a" * 20
PROXY_KEY = "cluster-proxy-key-" + "p" * 20
START_TIMEOUT = 60.0


@dataclass
class Node:
    """
    One twistd txvnc process.
    """

    name: str
    process: subprocess.Popen[str]
    log: OutputWatcher
    port: int
    log_path: Path
    audit_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sighup(self) -> None:
        self.process.send_signal(signal.SIGHUP)


@dataclass
class Cluster:
    directory: Path
    keys_file: Path
    apis: list[Node]
    proxies: list[Node]
    secrets: set[str] = field(default_factory=lambda: {ADMIN_KEY, PROXY_KEY})

    @property
    def nodes(self) -> list[Node]:
        return [*self.apis, *self.proxies]


def _start(
    directory: Path, name: str, args: list[str], listen_option: str
) -> Node | None:
    port = free_port()
    log_path = directory / f"{name}.log"
    audit_path = directory / f"{name}-audit.jsonl"
    process = subprocess.Popen(
        [
            str(TWISTD),
            "-n",
            "--pidfile=",
            "txvnc",
            listen_option,
            f"tcp:{port}:interface=127.0.0.1",
            "--audit-log",
            str(audit_path),
            # The fake VNC servers listen on any free port.
            "--allowed-target",
            "127.0.0.1:1024-65535",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=directory,
        env=clean_env(),
    )
    assert process.stdout is not None
    log = OutputWatcher(process.stdout, name, log_path)
    found = log.wait_for_any(
        [rf"Site starting on {port}$", r"CannotListenError"],
        timeout=START_TIMEOUT,
        stop_at_end=False,
    )
    if found is None or found.group(0) == "CannotListenError":
        _stop(process)
        log.wait_closed(STOP_TIMEOUT)
        if re.search(r"Address already in use", log.text()):
            return None
        raise AssertionError(f"{name} did not start:\n{log.text()}")
    return Node(name, process, log, port, log_path, audit_path)


def start(directory: Path, name: str, args: list[str], listen_option: str) -> Node:
    """
    Start one node, on another port if the one picked was taken meanwhile.
    """
    for _ in range(5):
        node = _start(directory, name, args, listen_option)
        if node is not None:
            return node
    raise AssertionError(f"{name}: every port picked was taken")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Cluster]:
    """
    Two APIs on one Redis database and two proxies, one per API.
    """
    directory = tmp_path_factory.mktemp("cluster")
    keys_file = directory / "keys"
    keys_file.write_text(f"admin {ADMIN_KEY}\nproxy {PROXY_KEY}\n")
    keys_file.chmod(0o600)
    redis_server.flush(63)
    store = redis_server.url(63)
    common = ["--api-key-file", str(keys_file)]
    apis = [
        start(
            directory,
            f"api-{i}",
            [*common, "--no-proxy", "--store", store, "--base-url", "http://p"],
            "--api-listen",
        )
        for i in (1, 2)
    ]
    proxies = [
        start(
            directory,
            f"proxy-{name}",
            [
                *common,
                "--no-api",
                "--consoleauth-url",
                api.url,
                "--novnc",
                str(NOVNC),
                "--node-name",
                f"proxy-{name}",
            ],
            "--listen",
        )
        for name, api in zip("ab", apis, strict=True)
    ]
    cluster = Cluster(directory, keys_file, apis, proxies)
    yield cluster
    codes = {}
    for node in cluster.nodes:
        codes[node.name] = _stop(node.process)
        node.log.wait_closed(STOP_TIMEOUT)
    for node in cluster.nodes:
        text = node.log.text()
        assert codes[node.name] in (0, -signal.SIGTERM), f"{node.name}:\n{text}"
        assert "Traceback" not in text, f"{node.name} logged a traceback:\n{text}"
    # No secret in any log line or audit line of any process.
    for node in cluster.nodes:
        for path in (node.log_path, node.audit_path):
            if not path.exists():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for secret in cluster.secrets:
                assert secret not in text, (
                    f"{path} holds a secret of {len(secret)} characters"
                )
