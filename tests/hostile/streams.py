"""
Streaming gigabytes through a console from the test's side: send a known
pseudo-random stream, read one and hash it, watch the proxy's memory.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from tests.hostile.backend import stream_chunks
from tests.hostile.wsclient import ANSWER_TIMEOUT, OP_BINARY, OP_CLOSE, WSClient
from tests.support.twistd import Twistd

MiB = 1024 * 1024
GiB = 1024 * MiB


def upstream_tag(tag: str) -> str:
    """
    The stream tag of what the browser sends (the backend's tag is for what
    it sends back).
    """
    return tag + "/up"


async def send_stream(client: WSClient, tag: str, size: int) -> str:
    """
    Send C{size} bytes of the C{tag} stream as binary frames, respecting the
    socket's flow control; the SHA-256 of what was sent.
    """
    digest = hashlib.sha256()
    for data in stream_chunks(upstream_tag(tag), size):
        digest.update(data)
        client.send_frame(data, OP_BINARY)
        await client.drain()
    return digest.hexdigest()


async def read_stream(
    client: WSClient, size: int, first_timeout: float = ANSWER_TIMEOUT
) -> str:
    """
    Read binary messages until C{size} bytes came; their SHA-256. The
    client answers the proxy's keepalive pings meanwhile (as a browser
    does), also while waiting up to C{first_timeout} for the first byte.
    """
    digest = hashlib.sha256()
    got = 0
    while got < size:
        frame = await client.read_frame(first_timeout if got == 0 else ANSWER_TIMEOUT)
        if frame.opcode == OP_CLOSE:
            raise AssertionError(
                f"closed ({frame.close_code} {frame.close_reason}) after "
                f"{got} of {size} bytes"
            )
        digest.update(frame.payload)
        got += len(frame.payload)
    assert got == size, f"{got} bytes read, {size} expected"
    return digest.hexdigest()


@dataclass
class MemoryWatch:
    """
    Samples a process's resident memory every C{interval} seconds.
    """

    server: Twistd
    interval: float = 0.2
    baseline: int = 0
    peak: int = 0
    samples: list[int] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.baseline = self.peak = self.server.rss_kib()
        self._task = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        while True:
            rss = self.server.rss_kib()
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.peak = max(self.peak, self.server.rss_kib())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 1024
