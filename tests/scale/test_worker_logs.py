"""
C{--workers 2}: each worker writes its own log lines, to the file twistd
logs to (C{--logfile}) or to the standard output it inherits (C{-n}), so
a console's line is written once by the process that served it, whole,
named C{[txvnc-worker-N]}, and crosses no pipe.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from tests.support.twistd import start_twistd_async

from .processes import KEY, children, open_console

pytestmark = pytest.mark.scale

CONSOLES = 40

#: A line of twistd's text log: its time, then its system in brackets.
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]\[]+\] \S")


def opened_files(pid: int) -> set[str]:
    """What process C{pid}'s descriptors lead to."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return found


async def open_and_close(server, vnc, count: int) -> list[int]:
    """
    C{count} consoles opened at once and closed at once (so both workers
    log at the same time); the browsers' ports.
    """
    tokens = [
        await server.mint_async("127.0.0.1", vnc.address.port, ttl=600)
        for _ in range(count)
    ]
    browsers = await gatherResults(
        [Deferred.fromCoroutine(open_console(server.proxy_port, t)) for t in tokens]
    )
    ports = [browser.transport.getHost().port for browser in browsers]
    for browser in browsers:
        browser.sendClose(1000)
    await gatherResults([browser.closed for browser in browsers])
    return ports


def closed_lines(text: str, port: int) -> list[str]:
    pattern = re.compile(rf"127\.0\.0\.1:{port}: console closed")
    return [line for line in text.splitlines() if pattern.search(line)]


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_each_worker_writes_its_lines_once_whole_into_the_log_file(tmp_path, vnc):
    """With --logfile, each worker holds the file open and writes its own lines: each console's close line is there once, whole, named for its worker, and no line of one process breaks into another's."""
    server = await start_twistd_async(
        tmp_path, api_key=KEY, page=False, workers=2, logfile=True
    )
    try:
        workers = children(server.pid)
        assert len(workers) == 2
        for pid in workers:
            # The twistd process's own descriptor, inherited.
            assert os.readlink(f"/proc/{pid}/fd/4") == str(server.logfile)
            assert str(server.logfile) in opened_files(pid)
        ports = await open_and_close(server, vnc, CONSOLES)
        for port in ports:
            await server.wait_for(rf"127\.0\.0\.1:{port}: console closed")
    finally:
        server.stop()

    assert server.logfile is not None
    text = server.logfile.read_text()
    lines = text.splitlines()
    broken = [line for line in lines if not LINE.match(line)]
    assert not broken, broken[:5]
    systems = set()
    for port in ports:
        (line,) = closed_lines(text, port)
        systems.add(re.search(r"\[(txvnc-worker-\d)\]", line).group(1))
    assert systems == {"txvnc-worker-1", "txvnc-worker-2"}
    # The twistd process's own lines are in the same file.
    assert any("[txvnc.service.workers.WorkerPool#info]" in line for line in lines)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_sigusr1_rotates_the_file_and_every_process_follows(tmp_path):
    """SIGUSR1 to the twistd process renames the log .1 and begins a new one, which the twistd process and both workers then write to; a worker given SIGUSR1 carries on."""
    server = await start_twistd_async(
        tmp_path, api_key=KEY, page=False, workers=2, logfile=True
    )
    try:
        assert server.logfile is not None
        rotated = Path(f"{server.logfile}.1")
        workers = children(server.pid)
        mark = server.log.mark()
        server.signal(signal.SIGUSR1)
        for pid in workers:
            os.kill(pid, signal.SIGUSR1)  # as a signal to the whole group would
        await server.wait_for(r"SIGUSR1: log rotated", mark)
        server.signal(signal.SIGHUP)
        for n in (1, 2):
            await server.wait_for(rf"txvnc-worker-{n}\] API keys reloaded", mark)
        await server.wait_for(r"SIGHUP: reloading", mark)
        assert sorted(children(server.pid)) == sorted(workers)
    finally:
        server.stop()

    before, after = rotated.read_text(), server.logfile.read_text()
    assert "ConsoleSite starting on" in before and "SIGHUP:" not in before
    assert not Path(f"{server.logfile}.2").exists()
    assert "SIGUSR1: log rotated" in after and "SIGHUP: reloading" in after
    for n in (1, 2):
        assert re.search(rf"txvnc-worker-{n}\] API keys reloaded", after)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_workers_write_to_the_standard_output_they_share(tmp_path, vnc):
    """Under -n, each worker's standard output is the twistd process's own, and each console's line is there once."""
    server = await start_twistd_async(tmp_path, api_key=KEY, page=False, workers=2)
    try:
        mine = os.readlink(f"/proc/{server.pid}/fd/1")
        for pid in children(server.pid):
            assert os.readlink(f"/proc/{pid}/fd/1") == mine
        ports = await open_and_close(server, vnc, CONSOLES)
        for port in ports:
            await server.wait_for(rf"127\.0\.0\.1:{port}: console closed")
    finally:
        server.stop()
    text = server.log.text()
    for port in ports:
        (line,) = closed_lines(text, port)
        assert re.search(r"\[txvnc-worker-\d\]", line)
    assert not [line for line in text.splitlines() if not LINE.match(line)]
