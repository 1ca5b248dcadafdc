"""
C{--workers 2} with real processes: two proxy processes share one port,
a killed worker comes back, and the consoles on the other one never notice.
"""

from __future__ import annotations

import os
import signal

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList

from tests.support.twistd import start_twistd

from .processes import KEY, children, open_console

pytestmark = pytest.mark.scale

CONSOLES = 24


@pytest.fixture
def txvnc2(tmp_path):
    server = start_twistd(tmp_path, api_key=KEY, page=False, workers=2)
    yield server
    server.stop()


async def open_many(txvnc, vnc, count):
    consoles = []
    for _ in range(count):
        token = await txvnc.mint_async("127.0.0.1", vnc.address.port, ttl=600)
        connected = vnc.next_connection()
        browser = await open_console(txvnc.proxy_port, token)
        consoles.append((browser, await connected))
    return consoles


async def round_trip(browser, server_side, payload: bytes) -> None:
    """C{payload} both ways through one console, intact."""
    before = browser.received
    arrived = browser.received_at_least(before + len(payload))
    server_side.transport.write(payload)
    await arrived
    target = server_side.received + len(payload)
    browser.sendMessage(payload, isBinary=True)
    await vnc_received(server_side, target)


def vnc_received(server_side, count: int) -> Deferred:
    """
    Fires when this VNC-side connection has received C{count} bytes (the
    fake server checks waiters on whichever connection gets data, and only
    this one is sending now).
    """
    d: Deferred = Deferred()
    if server_side.received >= count:
        d.callback(server_side)
    else:
        server_side.server._received_waiters.append((count, d))
    return d


def worker_of(server_side, pids: list[int]) -> int:
    """Which of C{pids} holds the proxy end of this console's VNC connection."""
    peer, host = server_side.transport.getPeer(), server_side.transport.getHost()
    local, remote = f":{peer.port:04X}", f":{host.port:04X}"
    with open("/proc/net/tcp") as table:
        inodes = {
            fields[9]
            for fields in (line.split() for line in table.readlines()[1:])
            if fields[1].endswith(local) and fields[2].endswith(remote)
        }
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    raise AssertionError(f"none of {pids} holds the connection from port {peer.port}")


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_killed_worker_is_restarted_and_other_consoles_stay_open(txvnc2, vnc):
    """Killing one of two workers closes only its consoles; it is restarted and new consoles open on both."""
    workers = sorted(children(txvnc2.process.pid))
    assert len(workers) == 2, txvnc2.log.text()

    consoles = await open_many(txvnc2, vnc, CONSOLES)
    by_worker = {pid: [] for pid in workers}
    for browser, server_side in consoles:
        by_worker[worker_of(server_side, workers)].append((browser, server_side))
    assert all(by_worker.values()), "the kernel gave every console to one worker"

    victim, survivor = workers
    mark = txvnc2.log.mark()
    os.kill(victim, signal.SIGKILL)
    await DeferredList([browser.closed for browser, _ in by_worker[victim]])
    await txvnc2.wait_for(r"worker \d ended \(signal 9\); starting it again", mark)
    restarted = await txvnc2.wait_for(r"worker \d started \(pid (\d+)\)", mark)
    new_pid = int(restarted.group(1))
    await txvnc2.wait_for(r"txvnc-worker-\d\] ConsoleSite starting on", mark)
    assert sorted(children(txvnc2.process.pid)) == sorted([survivor, new_pid])

    # The survivor's consoles are still open and relay both ways.
    for browser, server_side in by_worker[survivor]:
        assert not browser.closed.called
        await round_trip(browser, server_side, os.urandom(100_000))

    # New consoles open, on both the survivor and the restarted worker.
    fresh = await open_many(txvnc2, vnc, CONSOLES)
    holders = {worker_of(s, [survivor, new_pid]) for _, s in fresh}
    assert holders == {survivor, new_pid}
    for browser, server_side in fresh:
        await round_trip(browser, server_side, os.urandom(10_000))
    for browser, _ in consoles + fresh:
        browser.sendClose()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_sighup_rotates_the_proxy_key_in_every_worker(txvnc2, vnc):
    """After SIGHUP every worker checks tokens with the new proxy key; an open console carries on."""
    before = await open_many(txvnc2, vnc, 1)
    # The start-up key had both roles; after the rotation it is admin only,
    # so a worker still using it would be refused by the API (a 503).
    txvnc2.key_file.write_text(f"admin {KEY}\nproxy rotated-proxy-key-{'p' * 24}\n")
    mark = txvnc2.log.mark()
    txvnc2.process.send_signal(signal.SIGHUP)
    for n in (1, 2):
        await txvnc2.wait_for(
            rf"txvnc-worker-{n}\] API keys reloaded from .*: 1 admin, 1 proxy", mark
        )
    workers = sorted(children(txvnc2.process.pid))
    fresh = await open_many(txvnc2, vnc, CONSOLES)
    assert {worker_of(s, workers) for _, s in fresh} == set(workers)
    for browser, server_side in before + fresh:
        await round_trip(browser, server_side, os.urandom(1000))
    for browser, _ in before + fresh:
        browser.sendClose()
