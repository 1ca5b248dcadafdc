"""
A small txvnc cluster of real processes: two C{twistd txvnc --no-proxy} token
APIs sharing one real Redis, and two C{twistd txvnc --no-api} proxies, one
asking each API. The keys file gives the control plane an admin key and the
proxies a proxy key.

Every token and key the tests use is remembered, and after the module every
log line of every process (and every audit log) is searched for them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.twistd import Twistd, start_twistd, stop_all

ADMIN_KEY = "cluster-admin-key-" + "a" * 20
PROXY_KEY = "cluster-proxy-key-" + "p" * 20


class Node(Twistd):
    """
    One twistd txvnc of the cluster: a token API or a proxy, writing an
    audit log beside its log.
    """

    @property
    def port(self) -> int:
        return self.api_port or self.proxy_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def audit_path(self) -> Path:
        return self.directory / f"{self.name}-audit.jsonl"

    def sighup(self) -> None:
        self.signal(signal.SIGHUP)


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


def start(directory: Path, name: str, *args: str, **options: Any) -> Node:
    """
    Start one node named C{name} (its log is C{twistd-NAME.log}, its audit
    log C{NAME-audit.jsonl}).
    """
    node: Node = start_twistd(
        directory,
        "--audit-log",
        str(directory / f"{name}-audit.jsonl"),
        *args,
        name=name,
        kind=Node,
        **options,
    )
    return node


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
    apis = [
        start(
            directory,
            f"api-{i}",
            # The tests follow the proxies' revocation polls in the APIs'
            # access logs.
            "--access-log-polls",
            api_key_file=keys_file,
            proxy=False,
            store=store,
            base_url="http://p",
        )
        for i in (1, 2)
    ]
    proxies = [
        start(
            directory,
            f"proxy-{name}",
            "--consoleauth-url",
            api.url,
            "--node-name",
            f"proxy-{name}",
            api_key_file=keys_file,
            api=False,
        )
        for name, api in zip("ab", apis, strict=True)
    ]
    cluster = Cluster(directory, keys_file, apis, proxies)
    yield cluster
    stop_all(cluster.nodes)
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
