"""
Sending a large answer without holding it (a recording's file, a replay):
L{ThreadedBody} writes the chunks of a blocking iterator to a request one
at a time, each made off the reactor thread (disk reads block, on a
network file system for long), and the next only once the request's
transport has taken the last. Memory then holds one chunk and what the
transport buffers, whatever the size of the answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

#: How much of a file one read takes.
CHUNK = 64 * 1024

#: Runs a blocking call off the reactor thread, its result in a Deferred
#: (C{deferToThreadPool}; at once in tests).
Run = Callable[..., "Deferred[Any]"]


def _next(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


class ThreadedBody:
    """
    A push producer for a request: C{chunks} (a blocking iterator, closed
    at the end if it has a C{close}) taken in C{run} one at a time, each
    written to the request when it comes; none while the transport is
    paused (its buffer is full: the client reads slowly), and at most one
    being made. The request is finished after the last chunk; a chunk that
    fails to come (a read error) closes the connection, so the client sees
    the answer cut short rather than complete.
    """

    _log = Logger()

    def __init__(self, chunks: Iterator[bytes], run: Run) -> None:
        self._chunks = chunks
        self._run = run
        self._request: Request | None = None
        self._paused = False
        self._busy = False
        self._pumping = False
        self._over = False
        self.done: Deferred[None] = Deferred()

    def send(self, request: Request) -> Deferred[None]:
        """Write every chunk to C{request}, then finish it."""
        self._request = request
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        request.registerProducer(self, True)
        self._pump()
        return self.done

    def _pump(self) -> None:
        # A run that answers at once (tests) would recurse once per chunk:
        # loop here instead, and let _got call back in only when it came
        # later.
        if self._pumping:
            return
        self._pumping = True
        try:
            while not (self._paused or self._busy or self._over):
                self._busy = True
                self._run(_next, self._chunks).addBoth(self._got)
        finally:
            self._pumping = False

    def _got(self, result: bytes | Failure | None) -> None:
        self._busy = False
        request = self._request
        if self._over or request is None:
            if self._over:
                self._close_source()  # put off while this chunk was made
            return
        if isinstance(result, Failure):
            self._log.failure("sending an answer failed part-way", result)
            self._end()
            request.loseConnection()
            return
        if result is None:
            self._end()
            request.finish()
            return
        if result:
            request.write(result)
        self._pump()

    def _end(self) -> None:
        self._over = True
        request = self._request
        if request is not None and request.channel is not None:
            request.unregisterProducer()
        if not self._busy:
            # Else once the chunk being made is back (_got): closing the
            # source while another pool thread still reads from it would
            # race that read (a generator refuses: "already executing").
            self._close_source()
        if not self.done.called:
            self.done.callback(None)

    def _close_source(self) -> None:
        self._run(_close, self._chunks).addErrback(
            lambda f: self._log.failure("closing an answer's source failed", f)
        )

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        """The client went away: make no more chunks."""
        if not self._over:
            self._end()


class ThreadedResource(Resource):
    """A L{ThreadedBody} as the resource that answers one request."""

    isLeaf = True

    def __init__(self, body: ThreadedBody) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request: Request) -> int:
        self._body.send(request)
        return NOT_DONE_YET


class FileChunks:
    """
    The first C{size} bytes of a file (its size when opened: a recording
    still being written is sent as it was then), L{CHUNK} bytes a read.
    Opening and reading block: run them off the reactor thread.

    @raise OSError: from the constructor, when the file cannot be opened.
    """

    def __init__(self, path: str, chunk: int = CHUNK) -> None:
        self._file = open(path, "rb")
        self.size = os.fstat(self._file.fileno()).st_size
        self._left = self.size
        self._chunk = chunk

    def __iter__(self) -> FileChunks:
        return self

    def __next__(self) -> bytes:
        data = self._file.read(min(self._chunk, self._left)) if self._left > 0 else b""
        if not data:
            self.close()
            raise StopIteration
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()
