"""
Exhaustion: a side that stops reading must not make the proxy buffer the
other side's stream. Memory is read from /proc of the twistd process.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.hostile.conftest import Backend, echo_check, open_console, run
from tests.hostile.streams import GiB, MemoryWatch, MiB, read_stream, send_stream
from tests.support.twistd import Twistd

#: How much the proxy's resident memory may grow while a gigabyte waits.
MEMORY_BOUND_MIB = 16

#: How much may sit in socket buffers and the proxy before a writer stalls:
#: a few kernel buffers and Twisted's per-transport buffer, far below 1 GiB.
STALL_BOUND = 64 * MiB


def field(line: str, name: str) -> str:
    found = re.search(rf"\b{name}=(\w+)", line)
    assert found, line
    return found.group(1)


@pytest.mark.slow
def test_browser_stops_reading_while_vnc_streams_1_gib(txvnc: Twistd, backend: Backend):
    """While the browser reads nothing, the VNC server's 1 GiB stream stalls after a few MiB and the proxy grows by less than 16 MiB; once the browser reads, all of it arrives intact."""
    tag = "exhaust-down"
    since = backend.log.mark()
    run(echo_check(txvnc, backend, "exhaust-down-warm-up"))

    async def scenario() -> tuple[int, str, MemoryWatch, float]:
        watch = MemoryWatch(txvnc)
        watch.start()
        client, _ = await open_console(txvnc, backend, f"STREAM {tag} {GiB} 0")
        client.pause_reading()
        line = await asyncio.to_thread(backend.wait, "stalled", tag, since)
        stalled_at = int(field(line, "sent"))
        # The stream is stalled: what the proxy holds now is its worst case.
        stalled_growth = (txvnc.rss_kib() - watch.baseline) / 1024
        client.resume_reading()
        digest = await read_stream(client, GiB)
        watch.stop()
        client.close()
        return stalled_at, digest, watch, stalled_growth

    stalled_at, digest, watch, stalled_growth = run(scenario(), timeout=600)
    assert stalled_at < STALL_BOUND
    assert stalled_growth < MEMORY_BOUND_MIB
    assert watch.growth_mib < MEMORY_BOUND_MIB
    done = backend.wait("done", tag, since, timeout=120)
    assert field(done, "out") == digest
    print(
        f"\nVNC->browser: stalled after {stalled_at / MiB:.1f} MiB; proxy RSS "
        f"{watch.baseline / 1024:.1f} MiB, +{stalled_growth:.1f} MiB stalled, "
        f"+{watch.growth_mib:.1f} MiB peak over 1 GiB"
    )


@pytest.mark.slow
def test_vnc_stops_reading_while_browser_sends_1_gib(txvnc: Twistd, backend: Backend):
    """While the VNC server reads nothing, the browser's 1 GiB upload stalls after a few MiB and the proxy grows by less than 16 MiB; once the server reads, all of it arrives intact."""
    tag = "exhaust-up"
    since = backend.log.mark()
    run(echo_check(txvnc, backend, "exhaust-up-warm-up"))

    async def scenario() -> tuple[int, str, MemoryWatch, float]:
        watch = MemoryWatch(txvnc)
        watch.start()
        client, _ = await open_console(txvnc, backend, f"STREAM {tag} 0 {GiB} HOLD")
        await asyncio.to_thread(backend.wait, "open", tag, since)
        sending = asyncio.ensure_future(send_stream(client, tag, GiB))
        await client.stalled.wait()
        assert not sending.done()
        stalled_at = client.bytes_written
        stalled_growth = (txvnc.rss_kib() - watch.baseline) / 1024
        backend.go(tag)
        digest = await sending
        await asyncio.to_thread(backend.wait, "done", tag, since, 300)
        watch.stop()
        client.close()
        return stalled_at, digest, watch, stalled_growth

    stalled_at, digest, watch, stalled_growth = run(scenario(), timeout=600)
    assert stalled_at < STALL_BOUND
    assert stalled_growth < MEMORY_BOUND_MIB
    assert watch.growth_mib < MEMORY_BOUND_MIB
    done = backend.wait("done", tag, since)
    assert field(done, "received") == str(GiB)
    assert field(done, "in") == digest
    print(
        f"\nbrowser->VNC: stalled after {stalled_at / MiB:.1f} MiB; proxy RSS "
        f"{watch.baseline / 1024:.1f} MiB, +{stalled_growth:.1f} MiB stalled, "
        f"+{watch.growth_mib:.1f} MiB peak over 1 GiB"
    )

