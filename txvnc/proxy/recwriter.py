"""
The one thread per proxy process that writes every console recording
(L{RecordingWriter}): the reactor thread compresses each console's records
as they come (L{txvnc.proxy.recorder}) and hands the pieces over; this
thread appends them to the files, so no disk write ever blocks the relay.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Protocol

from twisted.logger import Logger

#: What an item on the writer's queue asks: open the file and write,
#: write, or write and close the file.
OPEN = -1
DATA = 0
CLOSE = -2


class WrittenRecording(Protocol):
    """A recording's file side, run in the writer thread."""

    def write(self, items: list[tuple[int, list[bytes], int]]) -> None: ...

    def broken(self, why: str) -> None: ...


class RecordingWriter:
    """
    The thread that writes every recording of one proxy process, started on
    first use; items (a recorder, what to do, the compressed pieces to
    write, how many recorded bytes they hold) come through one queue, in
    order.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: tuple[WrittenRecording, int, list[bytes], int]) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="txvnc-recording-writer", daemon=True
                    )
                    self._thread.start()
        self._queue.put(item)

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then end the thread (at shutdown)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def call_in_reactor(self, f: Any, *args: Any) -> None:
        self._reactor.callFromThread(f, *args)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[WrittenRecording, list[tuple[int, list[bytes], int]]] = {}
            for item in batch:
                if item is None:
                    stop = True
                    continue
                recorder, op, pieces, size = item
                groups.setdefault(recorder, []).append((op, pieces, size))
            for recorder, items in groups.items():
                try:
                    recorder.write(items)
                except Exception as e:  # never let one recording end the thread
                    self._log.failure("writing a recording failed")
                    recorder.broken(f"{type(e).__name__}: {e}")


def write_all(fd: int, pieces: list[bytes]) -> None:
    """All of C{pieces}, in order, without joining them (no copy)."""
    views = [memoryview(piece) for piece in pieces if piece]
    at = 0
    while at < len(views):
        written = os.writev(fd, views[at : at + _IOV_MAX])
        while written:
            if written >= len(views[at]):
                written -= len(views[at])
                at += 1
            else:
                views[at] = views[at][written:]
                written = 0


#: The most buffers one writev takes (POSIX guarantees at least 16;
#: Linux takes 1024).
_IOV_MAX = 1024
