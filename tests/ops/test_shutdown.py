"""
Graceful shutdown: SIGTERM against a real twistd with open consoles, and
the drain's time limit with a Clock.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from tests.proxy.harness import Stack
from tests.support.browser import Browser, connect_browser
from tests.support.twistd import start_twistd_async
from txvnc.ops.health import Readiness
from txvnc.ops.shutdown import DrainService
from txvnc.proxy import closecodes

DRAIN = 8.0


async def browse(proxy_port: int, token: str) -> Browser:
    browser = await connect_browser(proxy_port, f"token={token}")
    await browser.opened
    return browser


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_sigterm_closes_consoles_with_1001_and_exits_0(tmp_path, vnc):
    """On SIGTERM every open console gets 1001 "Service restarting" and twistd exits 0 within the drain time."""
    server = await start_twistd_async(tmp_path, "--drain-timeout", str(DRAIN))
    try:
        browsers = []
        for _ in range(3):
            connected = vnc.next_connection()
            token = await server.mint_async("127.0.0.1", vnc.address.port, instance_uuid="inst-1")
            browsers.append(await browse(server.proxy_port, token))
            await connected
        since = server.log.mark()
        started = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        for browser in browsers:
            _, code, reason = await browser.closed
            assert code == closecodes.GOING_AWAY
            assert reason == "Service restarting"
        code = await server.ended()
        elapsed = time.monotonic() - started
        assert code == 0, server.log.text()
        assert elapsed < DRAIN, f"exit took {elapsed:.1f}s"
        log = server.log.text()
        assert "closing 3 console(s)" in log
        assert "every console closed" in server.log.text(since)
        assert "Server Shut Down." in log
        assert "Traceback" not in log
        for conn in vnc.connections:
            await conn.lost
    finally:
        server.kill()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_sigterm_without_consoles_exits_0_at_once(tmp_path):
    """An idle twistd exits 0 on SIGTERM without waiting for the drain time."""
    server = await start_twistd_async(tmp_path, "--drain-timeout", "60")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert await server.ended() == 0, server.log.text()
    assert time.monotonic() - started < 30


@pytest_twisted.ensureDeferred
async def test_drain_gives_up_after_the_drain_timeout(vnc):
    """A console that never answers the close is dropped when --drain-timeout passes; readiness turns 503 at once."""
    stack = Stack()
    try:
        token = await stack.mint(vnc.address.port)
        connected = vnc.next_connection()
        browser = await stack.open_browser(f"token={token}")
        await browser.opened
        server_side = await connected
        browser.transport.pauseProducing()  # never reads the close frame
        clock = Clock()
        readiness = Readiness(clock)
        drain = DrainService(clock, stack.factory, readiness, drain_timeout=30)
        drain.startService()
        done = drain.stopService()
        assert readiness.draining and stack.factory.draining
        assert not done.called
        clock.advance(29)
        assert not done.called
        clock.advance(1)
        assert done.called
        await server_side.lost
        assert not stack.factory.consoles
        browser.transport.abortConnection()
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_new_consoles_while_draining_get_1001(vnc):
    """A console that arrives during the drain is told 1001 instead of being opened."""
    stack = Stack()
    try:
        stack.factory.draining = True
        token = await stack.mint(vnc.address.port)
        browser = await stack.open_browser(f"token={token}")
        await browser.opened
        _, code, reason = await browser.closed
        assert code == closecodes.GOING_AWAY
        assert reason == "Service restarting"
        assert vnc.connections == []
    finally:
        await stack.stop()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_recorded_console_the_drain_gives_up_on_is_recorded_to_its_end(
    tmp_path, vnc
):
    """
    SIGTERM with a recorded console that never answers the close: dropped
    when --drain-timeout passes, its recording still ends with what the
    browser was sent, an END record and the zstd frame's end.
    """
    from txvnc.core.recfile import END, SERVER, read_file

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    server = await start_twistd_async(
        tmp_path,
        "--drain-timeout",
        "1",
        "--record-dir",
        str(recordings),
        "--record-all",
    )
    try:
        connected = vnc.next_connection()
        token = await server.mint_async("127.0.0.1", vnc.address.port)
        browser = await browse(server.proxy_port, token)
        side = await connected
        sent = os.urandom(5000)
        side.transport.write(sent)
        await browser.received_at_least(len(sent))
        browser.transport.pauseProducing()  # never reads the close frame
        server.signal(signal.SIGTERM)
        assert await server.ended() == 0, server.log.text()
        assert "dropping them" in server.log.text()
    finally:
        server.kill()
        browser.transport.abortConnection()
    (path,) = recordings.glob("*.txrec")
    recording = read_file(str(path))
    assert b"".join(d for k, _, d in recording.records if k == SERVER) == sent
    assert [k for k, _, _ in recording.records if k != SERVER] == [END]
    assert recording.complete
