"""
Many machines on one: redis-server, two token API processes on it, two
proxy processes and HAProxy in front of both pairs, all on loopback. One proxy
node is killed; consoles on the other stay open, and every token minted
before the kill still opens a console, through HAProxy, on the survivor.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import DeferredList

from tests.support.processes import OutputWatcher, free_port, spawn, stop
from tests.support.twistd import Twistd, start_twistd

from .processes import KEY, open_console
from .test_workers import round_trip, worker_of

pytestmark = pytest.mark.scale

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
CONSOLES = 8

HAPROXY_CFG = """\
global
    maxconn 4000
    stats socket {dir}/haproxy.sock mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s
    option redispatch 1
    retries 3
    retry-on conn-failure empty-response

frontend consoles
    bind 127.0.0.1:{consoles}
    option forwardfor
    default_backend proxies

backend proxies
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
    server proxy1 127.0.0.1:{proxy1}
    server proxy2 127.0.0.1:{proxy2}

frontend api
    bind 127.0.0.1:{api}
    default_backend apis

backend apis
    balance roundrobin
    default-server check inter 500ms fall 2 rise 1
    server api1 127.0.0.1:{api1}
    server api2 127.0.0.1:{api2}
"""


def haproxy_status(sock_path: Path, backend: str) -> dict[str, str]:
    """Server name -> status (UP, DOWN, ...) of one backend, from the stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = {}
    for line in data.decode().splitlines()[1:]:
        fields = line.split(",")
        if len(fields) > 17 and fields[0] == backend and fields[1] not in ("FRONTEND", "BACKEND"):
            status[fields[1]] = fields[17]
    return status


@pytest.fixture
def cluster(tmp_path, redis_url):
    """Two API nodes on one Redis, two proxy nodes, HAProxy in front of each pair."""
    if not os.path.exists(HAPROXY):
        pytest.fail("haproxy is missing: run scripts/system-deps test", pytrace=False)
    started = []
    try:
        apis = [
            start_twistd(
                tmp_path / f"api{n}", api_key=KEY, page=False, store=redis_url, proxy=False
            )
            for n in (1, 2)
        ]
        started += apis
        ports = {"consoles": free_port(), "api": free_port()}
        api_url = f"http://127.0.0.1:{ports['api']}"
        proxies = [
            start_twistd(
                tmp_path / f"proxy{n}",
                "--consoleauth-url",
                api_url,
                api_key=KEY,
                page=False,
                api=False,
            )
            for n in (1, 2)
        ]
        started += proxies
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            HAPROXY_CFG.format(
                dir=tmp_path,
                proxy1=proxies[0].proxy_port,
                proxy2=proxies[1].proxy_port,
                api1=apis[0].api_url.rsplit(":", 1)[1],
                api2=apis[1].api_url.rsplit(":", 1)[1],
                **ports,
            )
        )
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        haproxy = spawn([HAPROXY, "-db", "-f", str(cfg)])
        started.append(haproxy)
        hlog = OutputWatcher(haproxy.stdout, "haproxy", tmp_path / "haproxy.log")
        yield {
            "apis": apis,
            "proxies": proxies,
            "api_url": api_url,
            "consoles_port": ports["consoles"],
            "haproxy": haproxy,
            "haproxy_log": hlog,
            "stats": tmp_path / "haproxy.sock",
        }
    finally:
        # The killed proxy node cannot stop cleanly: just stop and reap all.
        for process in reversed(started):
            if isinstance(process, Twistd):
                process.stop(clean=False)
            else:
                stop(process, must_obey=False)


async def until(predicate, timeout: float = 20.0, what: str = "") -> None:
    """Polls C{predicate} on the reactor's clock (HAProxy's state has no event to await)."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = reactor.seconds() + timeout
    while not predicate():
        assert reactor.seconds() < deadline, f"timed out waiting for {what}"
        await deferLater(reactor, 0.1, lambda: None)


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_losing_a_proxy_node_loses_nothing_else(cluster, vnc):
    """With one of two proxy nodes killed, its peers' consoles stay open and every token still opens a console through HAProxy."""
    stats = cluster["stats"]
    await until(lambda: os.path.exists(stats), what="haproxy's stats socket")
    await until(
        lambda: set(haproxy_status(stats, "proxies").values()) == {"UP"}
        and set(haproxy_status(stats, "apis").values()) == {"UP"},
        what=f"every node UP: {stats}",
    )
    api = cluster["apis"][0]
    front = cluster["consoles_port"]

    async def mint() -> str:
        return await api.mint_async(
            "127.0.0.1", vnc.address.port, api_url=cluster["api_url"], ttl=600
        )

    # Tokens minted now (alternating API nodes) but used only after the kill.
    later = [await mint() for _ in range(CONSOLES)]

    consoles = []
    for _ in range(CONSOLES):
        connected = vnc.next_connection()
        browser = await open_console(front, await mint())
        consoles.append((browser, await connected))
    pids = [p.process.pid for p in cluster["proxies"]]
    by_node = {pid: [] for pid in pids}
    for browser, side in consoles:
        by_node[worker_of(side, pids)].append((browser, side))
    assert all(by_node.values()), "HAProxy sent every console to one node"

    victim, survivor = pids
    os.kill(victim, signal.SIGKILL)
    await DeferredList([b.closed for b, _ in by_node[victim]])

    # The survivor's consoles never noticed.
    for browser, side in by_node[survivor]:
        assert not browser.closed.called
        await round_trip(browser, side, os.urandom(50_000))

    # Every earlier token, and new ones, open consoles; all on the survivor.
    # (No waiting for the health check: HAProxy retries a refused
    # connection on the other node.)
    fresh = []
    for token in later + [await mint() for _ in range(CONSOLES)]:
        connected = vnc.next_connection()
        browser = await open_console(front, token)
        fresh.append((browser, await connected))
    for browser, side in fresh:
        assert worker_of(side, [survivor]) == survivor
        await round_trip(browser, side, os.urandom(20_000))
    await until(
        lambda: haproxy_status(stats, "proxies") == {"proxy1": "DOWN", "proxy2": "UP"}
        or haproxy_status(stats, "proxies") == {"proxy1": "UP", "proxy2": "DOWN"},
        what="HAProxy marking the dead node DOWN",
    )
    ready = await treq.get(f"http://127.0.0.1:{front}/readyz")
    assert ready.code == 200
    for browser, _ in by_node[survivor] + fresh:
        browser.sendClose()
    await DeferredList([b.closed for b, _ in by_node[survivor] + fresh])
