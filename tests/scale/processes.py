"""
Real txvnc processes for the scale tests: C{twistd txvnc} (with or without
workers) from L{tests.twistd} with a known API key and an empty web
directory, and helpers to mint tokens and open consoles against it from
this process.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.proxy.harness import Browser
from tests.twistd import Twistd, start_twistd

#: The API key (admin and proxy) of every scale test's twistd.
KEY = "scale-test-key"


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


def start_txvnc(directory: Path, *args: str, **options: Any) -> Twistd:
    """
    L{tests.twistd.start_twistd} with L{KEY} in its key file and an empty
    web directory (the scale tests need no page).
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "web").mkdir(exist_ok=True)
    key_file = directory / "api.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    return start_twistd(
        directory, *args, web=directory / "web", api_key_file=key_file, **options
    )


async def mint(server: Twistd, vnc_port: int, api_url: str | None = None) -> str:
    """
    A token for C{127.0.0.1:vnc_port} from C{server}'s API, or the one at
    C{api_url}.
    """
    response = await treq.post(
        (api_url or server.api_url) + "/v1/tokens",
        json={"host": "127.0.0.1", "port": vnc_port, "ttl": 600},
        headers={"Authorization": "Bearer " + KEY},
    )
    assert response.code == 201, await response.text()
    return str((await response.json())["token"])


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


async def until_every_worker(
    workers: list,
    attempt: Callable[[], Awaitable[tuple[Any, Any]]],
    each: int,
    tries: int,
) -> dict[Any, list]:
    """
    Call C{attempt} (which returns the worker that served it and what it
    made) until every one of C{workers} has served C{each}; what each made.
    The kernel spreads connections over the workers by a hash, so how many
    tries that takes is luck: past C{tries} the test fails here, saying so.
    """
    made: dict[Any, list] = {worker: [] for worker in workers}
    for _ in range(tries):
        if all(len(items) >= each for items in made.values()):
            break
        worker, item = await attempt()
        made[worker].append(item)
    counts = {worker: len(items) for worker, items in made.items()}
    assert all(n >= each for n in counts.values()), f"after {tries} tries: {counts}"
    return made


async def until_every_worker_logs(
    server: Twistd,
    attempt: Callable[[], Awaitable[object]],
    line: str,
    each: int,
    tries: int,
) -> int:
    """
    Call C{attempt} until each of C{server}'s two workers has logged C{line}
    C{each} times; how many calls that took.
    """

    async def logged() -> tuple[int, None]:
        mark = server.log.mark()
        await attempt()
        found = await server.wait_for(rf"\[txvnc-worker-(\d)\] .*{line}", mark)
        return int(found.group(1)), None

    made = await until_every_worker([1, 2], logged, each, tries)
    return sum(len(items) for items in made.values())
