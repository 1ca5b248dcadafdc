"""
Large answers sent without holding them (txvnc.core.streamed): one chunk
is made at a time, off the reactor thread, and none while the client's
transport is full; the answer ends complete, or cut short on a read error,
and the source is closed either way, or when the client leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from txvnc.core.streamed import FileChunks, ThreadedBody, ThreadedResource


class Source:
    """Numbered chunks, counting how many were made and whether it was closed."""

    def __init__(self, count: int, size: int = 1000, fail_at: int | None = None) -> None:
        self.count, self.size, self.fail_at = count, size, fail_at
        self.made = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.made == self.fail_at:
            raise OSError("disk gone")
        if self.made >= self.count:
            raise StopIteration
        self.made += 1
        return bytes([self.made % 256]) * self.size

    def close(self) -> None:
        self.closed = True


class Pool:
    """A thread pool the test runs by hand: each call waits until run."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((d, f, args))
        return d

    def step(self) -> None:
        d, f, args = self.waiting.pop(0)
        try:
            result = f(*args)
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)


def serve(body: ThreadedBody) -> tuple[Any, StringTransport]:
    root = Resource()
    root.putChild(b"x", ThreadedResource(body))
    site = Site(root, reactor=Clock())
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    return channel, transport


def body_of(response: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response."""
    _, _, rest = response.partition(b"\r\n\r\n")
    out = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return out


def test_one_chunk_is_made_at_a_time_and_none_while_the_client_is_full() -> None:
    """The source is read one chunk at a time, in the pool; while the transport is paused nothing more is read; the answer ends complete and the source closed."""
    source, pool = Source(5), Pool()
    body = ThreadedBody(source, pool)
    _, transport = serve(body)
    assert len(pool.waiting) == 1 and source.made == 0
    pool.step()
    assert source.made == 1 and len(pool.waiting) == 1
    transport.producer.pauseProducing()  # the client's socket is full
    pool.step()
    assert source.made == 2 and pool.waiting == []
    transport.producer.resumeProducing()
    assert len(pool.waiting) == 1
    while pool.waiting:
        pool.step()
    assert body.done.called and source.closed
    assert body_of(transport.value()) == b"".join(bytes([i]) * 1000 for i in range(1, 6))
    assert transport.value().endswith(b"0\r\n\r\n")


def test_a_read_error_cuts_the_answer_short() -> None:
    """A chunk that fails to come closes the connection: the client never sees the answer as complete."""
    source = Source(5, fail_at=2)
    body = ThreadedBody(source, maybeDeferred)
    _, transport = serve(body)
    assert transport.disconnecting and source.closed
    assert not transport.value().endswith(b"0\r\n\r\n")
    assert body_of(transport.value()) == b"\x01" * 1000 + b"\x02" * 1000


def test_a_client_that_leaves_stops_the_reading() -> None:
    """When the connection is lost mid-answer, no more chunks are read and the source is closed."""
    source, pool = Source(100), Pool()
    body = ThreadedBody(source, pool)
    channel, _ = serve(body)
    pool.step()
    pool.step()
    channel.connectionLost(Failure(ConnectionError("gone")))
    while pool.waiting:
        pool.step()
    assert source.made == 3 and source.closed and body.done.called  # the third was in flight


def test_a_file_is_read_in_chunks_up_to_its_size_when_opened(tmp_path: Path) -> None:
    """FileChunks reads at most a chunk a read, and stops at the size the file had when opened (a recording still growing)."""
    path = tmp_path / "f"
    path.write_bytes(b"a" * 200_000)
    chunks = FileChunks(str(path), 65536)
    assert chunks.size == 200_000
    with open(path, "ab") as f:
        f.write(b"b" * 1000)
    got = list(chunks)
    assert max(map(len, got)) == 65536 and b"".join(got) == b"a" * 200_000


def test_the_source_is_closed_only_after_the_chunk_in_flight_came_back() -> None:
    """
    A client that leaves while a chunk is being made: the source is not
    closed in the pool at the same time (a pool runs calls in parallel; a
    generator closed while it runs in another thread raises "generator
    already executing" and stays open), but once that chunk is back.
    """
    made: list[str] = []

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                made.append("chunk")
                yield b"x" * 1000
        finally:
            made.append("closed")

    source, pool = chunks(), Pool()
    body = ThreadedBody(source, pool)
    channel, _ = serve(body)
    pool.step()
    channel.connectionLost(Failure(ConnectionError("gone")))  # a chunk is in flight
    assert [f.__name__ for _, f, _ in pool.waiting] == ["_next"]
    while pool.waiting:
        pool.step()
    assert made == ["chunk", "chunk", "closed"] and body.done.called
