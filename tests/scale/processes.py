"""
Helpers for the scale tests, which run C{twistd txvnc} (with or without
workers) through L{tests.support.twistd.start_twistd} with L{KEY} and no
page: a process's workers, consoles opened from this process, and tries
repeated until every worker has had its share.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.browser import Browser, connect_browser
from tests.support.twistd import Twistd

#: The API key (admin and proxy) of every scale test's twistd, so that a
#: proxy and a token API started apart agree on it.
KEY = "scale-test-key-" + "s" * 16  # twistd refuses keys under 16 characters


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


async def open_console(port: int, token: str, host: str = "127.0.0.1") -> Browser:
    """
    A WebSocket console on C{host:port} with C{token}, once open; it sends
    no Origin, as HAProxy's front port is no proxy's own origin.
    """
    browser = await connect_browser(port, f"token={token}", host=host, origin=None)
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
