"""
Nothing is lost or changed: gigabytes through one console and a thousand
consoles at once, every byte hashed on both ends.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

from tests.hostile.conftest import NO_GUARD, Backend, open_console, run
from tests.hostile.streams import GiB, MemoryWatch, MiB, read_stream, send_stream
from tests.support.twistd import Twistd, start_twistd


@pytest.fixture(scope="module")
def txvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    The module's C{twistd txvnc}, patient where this module is not about
    patience: token checks may take 30 s and pongs 60 s. On a loaded 2-core
    machine a thousand token checks outlast the default 5 s, and one Python
    client moving a thousand streams can be later than 10 s with a pong (a
    browser answers pings in its network stack).
    """
    server = start_twistd(
        tmp_path_factory.mktemp("txvnc"),
        *NO_GUARD,
        "--token-check-timeout", "30",
        "--keepalive-timeout", "60",
    )
    yield server
    server.stop()


def done_line(backend: Backend, tag: str, since: int) -> dict[str, str]:
    line = backend.wait("done", tag, since, timeout=300)
    return dict(re.findall(r"(\w+)=(\w+)", line))


@pytest.mark.slow
def test_one_gib_each_way_through_one_console(txvnc: Twistd, backend: Backend):
    """1 GiB up and 1 GiB down at the same time through one console arrive whole: SHA-256 equal on both ends."""
    tag = "integrity-1gib"
    since = backend.log.mark()

    async def scenario() -> tuple[str, str]:
        client, _ = await open_console(txvnc, backend, f"STREAM {tag} {GiB} {GiB}")
        try:
            up, down = await asyncio.gather(
                send_stream(client, tag, GiB), read_stream(client, GiB)
            )
            closing = await client.expect_close()
            assert closing.close_code == 1000
            return up, down
        finally:
            client.close()

    up, down = run(scenario(), timeout=600)
    done = done_line(backend, tag, since)
    assert done["received"] == str(GiB) and done["sent"] == str(GiB)
    assert done["in"] == up
    assert done["out"] == down


@pytest.mark.slow
def test_thousand_consoles_one_mib_each_way(txvnc: Twistd, backend: Backend):
    """1,000 consoles open at once, each moving 1 MiB each way, all arrive whole: every SHA-256 equal on both ends."""
    count = 1000
    since, log_since = backend.log.mark(), txvnc.log.mark()
    tokens = [txvnc.mint("127.0.0.1", backend.port) for _ in range(count)]

    async def one(
        i: int, token: str, go: asyncio.Event, opening: asyncio.Semaphore
    ) -> tuple[str, str]:
        tag = f"thousand-{i}"
        command = f"STREAM {tag} {MiB} {MiB} WAIT"
        async with opening:
            client, _ = await open_console(txvnc, backend, command, token=token)
        try:
            # Reading from the start answers the keepalive pings of a long
            # wait for the others (nothing else comes before our first byte).
            reading = asyncio.ensure_future(read_stream(client, MiB, first_timeout=300))
            opened.append(i)
            if len(opened) == count:
                go.set()
            await go.wait()
            up = await send_stream(client, tag, MiB)
            down = await reading
            closing = await client.expect_close(timeout=120)
            assert closing.close_code == 1000
            return up, down
        finally:
            client.close()

    opened: list[int] = []

    watch = MemoryWatch(txvnc)

    async def scenario() -> list[tuple[str, str]]:
        watch.start()
        # All open first, then all move their data at once. At most 50
        # upgrades are in flight: a burst of 1,000 token checks outlasts the
        # default 5 s token-check timeout on a busy 2-core machine (503 for
        # the rest).
        go = asyncio.Event()
        opening = asyncio.Semaphore(50)
        try:
            return await asyncio.gather(
                *(one(i, t, go, opening) for i, t in enumerate(tokens))
            )
        finally:
            watch.stop()

    results = run(scenario(), timeout=600)
    for i, (up, down) in enumerate(results):
        done = done_line(backend, f"thousand-{i}", since)
        assert (done["in"], done["out"]) == (up, down), f"console {i}"
    connects = [
        line for line in txvnc.log.lines(log_since) if ": connecting to: 127.0.0.1:" in line
    ]
    assert len(connects) == count
    assert txvnc.loud_lines(log_since) == []
    print(
        f"\n1,000 consoles: proxy RSS {watch.baseline / 1024:.1f} MiB, "
        f"peak +{watch.growth_mib:.1f} MiB"
    )
