"""
A small txvnc cluster of real processes: two C{twistd txvnc --no-proxy} token
APIs sharing one real Redis, and two C{twistd txvnc --no-api} proxies, one
asking each API. The keys file gives the control plane an admin key and the
proxies a proxy key.

Every token and key the tests use is remembered, and after the module every
log line of every process (and every audit log) is searched for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer
from tests.support.twistd import Twistd, start_twistd, stop_all

ADMIN_KEY = "cluster-admin-key-" + "a" * 20
PROXY_KEY = "cluster-proxy-key-" + "p" * 20


@dataclass
class Cluster:
    directory: Path
    keys_file: Path
    apis: list[Twistd]
    proxies: list[Twistd]
    secrets: set[str] = field(default_factory=lambda: {ADMIN_KEY, PROXY_KEY})

    @property
    def nodes(self) -> list[Twistd]:
        return [*self.apis, *self.proxies]


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
    # Each node's log is twistd-NAME.log, its audit log NAME-audit.jsonl.
    apis = [
        start_twistd(
            directory,
            # The tests follow the proxies' revocation polls in the APIs'
            # access logs.
            "--access-log-polls",
            name=f"api-{i}",
            audit_log=True,
            api_key_file=keys_file,
            proxy=False,
            store=store,
            base_url="http://p",
        )
        for i in (1, 2)
    ]
    proxies = [
        start_twistd(
            directory,
            "--consoleauth-url",
            api.api_url,
            "--node-name",
            f"proxy-{name}",
            name=f"proxy-{name}",
            audit_log=True,
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
            if path is None or not path.exists():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for secret in cluster.secrets:
                assert secret not in text, (
                    f"{path} holds a secret of {len(secret)} characters"
                )
