"""
Console recording on the proxy: the tap a L{txvnc.proxy.relay.Relay} calls
once per read of a recorded console (L{ConsoleRecorder}), and the one
thread per proxy process that compresses and writes every recording
(L{RecordingWriter}).

Disk writes block, so none happens on the reactor thread: a recorded read
costs the relay a clock read and a queue put. What the writer has not yet
written is bounded per console (C{max_pending}): past the bound the
console's VNC reads pause until the writer is down to half of it (a
console faster than the disk goes at the disk's pace; memory stays
bounded). Past twice the bound, paused for C{stall} seconds (a stuck disk),
or when a write fails (a full or broken disk), the recording stops and
C{--record-on-failure} decides: C{close} ends the console with close code
4007 (the page says why), C{continue} lets it go on unrecorded. The file
keeps what was written, ending with a L{GAP} record saying why.

What is recorded (docs/recording.md): what the browser was sent, always;
the browser's key and pointer messages only when the token asks
(C{record_input}: they may hold passwords); clipboard text the browser sent
only when it asks (C{record_clipboard}).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from txvnc.client import ConnectInfo
from txvnc.core.recfile import (
    CLIPBOARD,
    END,
    GAP,
    INPUT,
    SERVER,
    RecordEncoder,
    RecordingHeader,
    recording_id,
)
from txvnc.core.recordings import RecordingDirectory
from txvnc.proxy import closecodes

#: What one console's recording may hold in memory, not yet written, before
#: the console's VNC reads pause until the writer has caught up (to half
#: of it); twice this, or paused for L{DEFAULT_STALL} seconds, and the
#: recording has failed.
DEFAULT_MAX_PENDING = 16 * 1024 * 1024
DEFAULT_STALL = 10.0
ON_FAILURE = ("close", "continue")

#: After writing at least L{GATHER_BYTES}, the writer lets the next batch
#: gather for L{GATHER} seconds: at full speed, one wake-up (a thread switch
#: and a GIL hand-over the reactor thread pays for too) per many reads, not
#: per read; slower consoles are written as they come. 2 ms at GB/s stays
#: far below half of L{DEFAULT_MAX_PENDING}: no read pauses for it.
GATHER_BYTES = 1024 * 1024
GATHER = 0.002

#: Control items on the writer's queue (beside record kinds).
_OPEN = -1
_CLOSE = -2

#: RFB client message types that carry a person's input, and their sizes:
#: KeyEvent, PointerEvent, QEMU's extended KeyEvent (255, subtype 0).
_KEY_EVENT = 4
_POINTER_EVENT = 5
_CUT_TEXT = 6
_QEMU = 255


def input_kind(message: bytes, keys: bool, clipboard: bool) -> int | None:
    """
    Which record a browser message makes (L{INPUT}, L{CLIPBOARD}) or
    L{None}: not recorded. noVNC sends each RFB message in a WebSocket
    message of its own; the sizes are exact, so no handshake message (a
    VNC authentication response is 16 bytes) is ever taken for input.
    """
    if not message:
        return None
    kind = message[0]
    if keys and (
        (kind == _KEY_EVENT and len(message) == 8)
        or (kind == _POINTER_EVENT and len(message) == 6)
        or (kind == _QEMU and len(message) == 12 and message[1] == 0)
    ):
        return INPUT
    if clipboard and kind == _CUT_TEXT and len(message) >= 8:
        return CLIPBOARD
    return None


class RecordedConsole(Protocol):
    """What a recorder reads of its console, and how it ends it."""

    conn_id: str
    client: str
    token_hash: str | None
    close_why: str | None
    outcome: str | None

    @property
    def transport(self) -> Any: ...

    def close_console(self, code: int, reason: str) -> None: ...


class RecordingWriter:
    """
    The thread that compresses and writes every recording of one proxy
    process, started on first use; items come through one queue, in order.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: tuple[ConsoleRecorder, int, int, Any]) -> None:
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
            groups: dict[ConsoleRecorder, list[tuple[int, int, Any]]] = {}
            size = 0
            for item in batch:
                if item is None:
                    stop = True
                    continue
                recorder, kind, ms, data = item
                groups.setdefault(recorder, []).append((kind, ms, data))
                if kind == SERVER:
                    size += len(data)
            self._write(groups)
            if size >= GATHER_BYTES and not stop:
                time.sleep(GATHER)

    def _write(self, groups: dict[ConsoleRecorder, list[tuple[int, int, Any]]]) -> None:
        for recorder, items in groups.items():
            try:
                recorder.write(items)
            except Exception as e:  # never let one recording end the thread
                self._log.failure("writing a recording failed")
                recorder.broken(f"{type(e).__name__}: {e}")


class ConsoleRecorder:
    """
    One console's recording: the relay's tap (L{to_browser},
    L{from_browser}, L{close}) on the reactor thread, and its file in the
    writer thread (L{write}).
    """

    _log = Logger()

    def __init__(
        self,
        writer: RecordingWriter,
        clock: IReactorTime,
        console: RecordedConsole,
        header: RecordingHeader,
        path: str,
        on_failure: str = "close",
        max_pending: int = DEFAULT_MAX_PENDING,
        stall: float = DEFAULT_STALL,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._console = console
        self.header = header
        self.path = path
        self._on_failure = on_failure
        self._max_pending = max_pending
        self._stall = stall
        self._start = header.started_at
        #: The VNC side's transport, paused while the writer catches up.
        self._producer: Any = None
        self._paused = False
        self._stall_call: Any = None
        #: Set (reactor thread) while paused: the writer thread then says
        #: when the backlog is down to half the bound.
        self._want_drain = False
        self._keys = header.input
        self._clipboard = header.clipboard
        #: Data bytes queued (reactor thread) and written (writer thread):
        #: each written by one thread only, their difference is in memory.
        self.queued = 0
        self.flushed = 0
        #: Stopped recording: closed, full, or its file failed.
        self.off = False
        self._closed = False
        self._reported = False
        # The writer thread's own.
        self._fd: int | None = None
        self._encoder: RecordEncoder | None = None
        self._broken = False
        writer.submit((self, _OPEN, 0, header))

    def _ms(self) -> int:
        return int((self._clock.seconds() - self._start) * 1000)

    # The relay's tap (reactor thread)

    def reading(self, producer: Any) -> None:
        """The transport whose reads pause while the writer catches up."""
        self._producer = producer

    def to_browser(self, data: bytes) -> None:
        """Bytes the browser was just sent."""
        if self.off:
            return
        self.queued += len(data)
        pending = self.queued - self.flushed
        if pending > self._max_pending:
            if pending > 2 * self._max_pending:
                self._stop_recording(
                    f"over {2 * self._max_pending} bytes not yet written "
                    "(the disk is too slow)"
                )
                return
            if not self._paused:
                self._pause()
        self._writer.submit((self, SERVER, self._ms(), data))

    def _pause(self) -> None:
        """Stop the VNC side's reads until the writer has caught up."""
        self._paused = True
        self._want_drain = True
        if self._producer is not None:
            self._producer.pauseProducing()
        self._stall_call = self._clock.callLater(self._stall, self._stalled)

    def _drained(self) -> None:
        """The writer caught up (reactor thread): reads go on."""
        if not self._paused:
            return
        self._paused = False
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        self._stall_call = None
        if self._producer is not None:
            self._producer.resumeProducing()

    def _stalled(self) -> None:
        self._stall_call = None
        if not self._paused or self.off:
            return
        pending = self.queued - self.flushed
        self._stop_recording(
            f"{pending} bytes not written in {self._stall:g}s (the disk is too slow)"
        )

    def from_browser(self, payloads: Sequence[bytes]) -> None:
        """Messages the browser sent; only input the token asks for is kept."""
        if self.off or not (self._keys or self._clipboard):
            return
        for payload in payloads:
            kind = input_kind(payload, self._keys, self._clipboard)
            if kind is not None:
                self.queued += len(payload)
                self._writer.submit((self, kind, self._ms(), bytes(payload)))

    def close(self, why: str | None) -> None:
        """The console ended: write the END record and finish the file."""
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        if self.off:
            return
        self.off = True
        self._closed = True
        end = json.dumps({"why": why}).encode("utf-8")
        self._writer.submit((self, END, self._ms(), end))
        self._writer.submit((self, _CLOSE, self._ms(), None))

    def _stop_recording(self, why: str) -> None:
        self.off = True
        gap = json.dumps({"why": why}).encode("utf-8")
        self._writer.submit((self, GAP, self._ms(), gap))
        self._writer.submit((self, _CLOSE, self._ms(), None))
        self.failed(why)

    def failed(self, why: str) -> None:
        """
        The recording cannot go on (reactor thread): say so, and apply
        C{--record-on-failure}.
        """
        self.off = True
        self._drained()  # reads paused for the recording go on
        if self._reported:
            return
        self._reported = True
        console = self._console
        if self._on_failure == "continue":
            self._log.warn(
                "[{conn_id}] {client}: recording {recording} stopped: {why}; "
                "the console goes on unrecorded (--record-on-failure continue)",
                conn_id=console.conn_id,
                client=console.client,
                recording=self.header.id,
                why=why,
            )
            return
        self._log.error(
            "[{conn_id}] {client}: recording {recording} failed: {why}; "
            "closing the console (--record-on-failure close)",
            conn_id=console.conn_id,
            client=console.client,
            recording=self.header.id,
            why=why,
        )
        if console.close_why is None:
            console.close_why = f"recording failed: {why}"
        console.outcome = closecodes.OUTCOMES[closecodes.RECORDING_FAILED]
        transport = console.transport
        if transport is not None:
            transport.resumeProducing()
        console.close_console(
            closecodes.RECORDING_FAILED,
            closecodes.REASONS[closecodes.RECORDING_FAILED],
        )

    # The file (writer thread)

    def write(self, items: list[tuple[int, int, Any]]) -> None:
        """Append C{items} to the file, one flush for all of them."""
        if self._broken:
            return
        records = []
        size = 0
        close = False
        try:
            for kind, ms, data in items:
                if kind == _OPEN:
                    self._open(data)
                elif kind == _CLOSE:
                    close = True
                else:
                    records.append((kind, ms, data))
                    if kind != GAP and kind != END:
                        size += len(data)
            if self._encoder is not None and self._fd is not None:
                out = self._encoder.batch(records) if records else b""
                if close:
                    out += self._encoder.finish()
                _write_all(self._fd, out)
            self.flushed += size
            behind = self.queued - self.flushed
            if self._want_drain and behind <= self._max_pending // 2:
                self._want_drain = False
                self._writer.call_in_reactor(self._drained)
            if close:
                self._close_file()
        except OSError as e:
            self.broken(e.strerror or str(e))

    def _open(self, header: RecordingHeader) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self._fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o640)
        self._encoder = RecordEncoder()
        _write_all(self._fd, self._encoder.start(header))

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def broken(self, why: str) -> None:
        """The file failed (writer thread): drop the rest, tell the reactor."""
        self._broken = True
        try:
            self._close_file()
        except OSError:
            pass
        self._writer.call_in_reactor(self._file_failed, why)

    def _file_failed(self, why: str) -> None:
        if self._closed:
            self._log.warn(
                "recording {recording} could not be finished: {why}",
                recording=self.header.id,
                why=why,
            )
            return
        self.failed(f"cannot write {self.path}: {why}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Recordings:
    """
    The proxy's recording configuration and its writer: which consoles are
    recorded (C{--record-all}, or tokens minted with C{"record": true}),
    where (C{--record-dir}), and what a failure does (C{--record-on-failure}).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        directory: str,
        node: str,
        record_all: bool = False,
        on_failure: str = "close",
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: IReactorTime | None = None,
    ) -> None:
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {ON_FAILURE}")
        self.directory = RecordingDirectory(directory)
        self.node = node
        self.record_all = record_all
        self.on_failure = on_failure
        self.max_pending = max_pending
        self._clock: IReactorTime = clock if clock is not None else reactor
        self.writer = RecordingWriter(reactor)

    def wanted(self, info: ConnectInfo) -> bool:
        return self.record_all or bool(info.record)

    def tap_for(
        self, console: RecordedConsole, info: ConnectInfo
    ) -> ConsoleRecorder | None:
        """A recorder for C{console}, or L{None} when it is not recorded."""
        if not self.wanted(info):
            return None
        started = self._clock.seconds()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
        rid = recording_id(stamp, self.node, console.conn_id)
        header = RecordingHeader(
            id=rid,
            node=self.node,
            console_id=console.conn_id,
            instance_uuid=info.instance_uuid,
            target=info.target,
            token_hash=console.token_hash,
            started_at=started,
            input=bool(info.record_input),
            clipboard=bool(info.record_clipboard),
        )
        path = self.directory.path_for(rid)
        assert path is not None
        self._log.info(
            "[{conn_id}] {client}: recording the console as {recording}",
            conn_id=console.conn_id,
            client=console.client,
            recording=rid,
        )
        return ConsoleRecorder(
            self.writer,
            self._clock,
            console,
            header,
            path,
            self.on_failure,
            self.max_pending,
        )

    def stop(self) -> None:
        """Finish writing (at shutdown, after the consoles closed)."""
        self.writer.stop()
