"""
Console recording on the proxy: the tap a L{txvnc.proxy.relay.Relay} calls
once per read of a recorded console (L{ConsoleRecorder}), and the one
thread per proxy process that writes every recording
(L{txvnc.proxy.recwriter.RecordingWriter}).

Disk writes block, so none happens on the reactor thread: a recorded read
costs the relay a clock read, compressing the read (zstd, with the GIL let
go: gigabytes a second) and a queue put. Compressing where the read is, as
it comes, keeps it out of the writer thread's hands: handing every read to
another thread to compress cost the relay as much again in GIL hand-overs,
thread wake-ups and page faults as the compressing itself (docs/recording.md,
"Throughput"); the writer only writes. What the writer has not yet
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
import time
import weakref
from collections.abc import Callable, Sequence
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
from txvnc.proxy.recwriter import CLOSE, DATA, OPEN, RecordingWriter, write_all

#: What one console's recording may hold in memory, not yet written, before
#: the console's VNC reads pause until the writer has caught up (to half
#: of it); twice this, or paused for L{DEFAULT_STALL} seconds, and the
#: recording has failed.
DEFAULT_MAX_PENDING = 16 * 1024 * 1024
DEFAULT_STALL = 10.0
ON_FAILURE = ("close", "continue")

#: A console's compressed records go to the writer once they hold
#: L{HAND_OVER} recorded bytes, or L{HAND_OVER_AFTER} seconds after the
#: first: a fast console wakes the writer (a thread switch, and GIL
#: hand-overs the relay pays for too) once per many reads, not per read.
HAND_OVER = 256 * 1024
HAND_OVER_AFTER = 0.01


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


class ConsoleRecorder:
    """
    One console's recording: the relay's tap (L{to_browser},
    L{from_browser}, L{close}) and the compressing on the reactor thread,
    and its file in the writer thread (L{write}).
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
        #: The reactor thread's own: records compressed as they come, and
        #: what is compressed but not yet handed to the writer.
        self._encoder = RecordEncoder()
        self._held: list[bytes] = []
        self._held_size = 0
        self._hand_over_call: Any = None
        #: Told when the relay closes this recorder (L{Recordings} keeps
        #: the open ones, to finish them at shutdown).
        self.ended: Callable[[ConsoleRecorder], None] | None = None
        # The writer thread's own.
        self._fd: int | None = None
        self._broken = False
        writer.submit((self, OPEN, [self._encoder.start(header)], 0))

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
        self._record(SERVER, data)

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
                self._record(kind, bytes(payload))

    def _record(self, kind: int, data: bytes) -> None:
        """One record compressed, to hand to the writer soon."""
        self._held += self._encoder.record(kind, self._ms(), data)
        self._held_size += len(data)
        if self._held_size >= HAND_OVER or self._paused:
            self._hand_over()
        elif self._hand_over_call is None:
            self._hand_over_call = self._clock.callLater(
                HAND_OVER_AFTER, self._hand_over
            )

    def _hand_over(
        self, op: int = DATA, last: tuple[int, bytes] | None = None
    ) -> None:
        """What is held, flushed (and C{last}, and the frame's end), to the writer."""
        if self._hand_over_call is not None and self._hand_over_call.active():
            self._hand_over_call.cancel()
        self._hand_over_call = None
        pieces, self._held = self._held, []
        if last is not None:
            pieces += self._encoder.record(last[0], self._ms(), last[1])
            pieces += [self._encoder.flush(), self._encoder.finish()]
        else:
            pieces.append(self._encoder.flush())
        self._writer.submit((self, op, pieces, self._held_size))
        self._held_size = 0

    def close(self, why: str | None) -> None:
        """The console ended: write the END record and finish the file."""
        if self.ended is not None:
            self.ended(self)
            self.ended = None
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        if self.off:
            return
        self.off = True
        self._closed = True
        self._finish(END, why)

    def shut_down(self) -> None:
        """
        The proxy stops with the console still open (the drain gave up on
        it): finish the file now, what is held included; the console's
        own end, if it comes, finds the recording closed.
        """
        self.close(self._console.close_why or "the proxy stopped")

    def _stop_recording(self, why: str) -> None:
        self.off = True
        self._finish(GAP, why)
        self.failed(why)

    def _finish(self, kind: int, why: str | None) -> None:
        """The last record (L{END} or L{GAP}) and the end of the frame."""
        self._hand_over(CLOSE, (kind, json.dumps({"why": why}).encode("utf-8")))

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

    def write(self, items: list[tuple[int, list[bytes], int]]) -> None:
        """Append the pieces of C{items} to the file, in one write."""
        if self._broken:
            return
        pieces: list[bytes] = []
        size = 0
        close = False
        try:
            for op, more, recorded in items:
                if op == OPEN:
                    self._open()
                elif op == CLOSE:
                    close = True
                pieces += more
                size += recorded
            if self._fd is not None:
                write_all(self._fd, pieces)
            self.flushed += size
            behind = self.queued - self.flushed
            if self._want_drain and behind <= self._max_pending // 2:
                self._want_drain = False
                self._writer.call_in_reactor(self._drained)
            if close:
                self._close_file()
        except OSError as e:
            self.broken(e.strerror or str(e))

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self._fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o640)

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
        #: The recorders whose console has not closed yet.
        self._open: weakref.WeakSet[ConsoleRecorder] = weakref.WeakSet()

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
        recorder = ConsoleRecorder(
            self.writer,
            self._clock,
            console,
            header,
            path,
            self.on_failure,
            self.max_pending,
        )
        self._open.add(recorder)
        recorder.ended = self._open.discard
        return recorder

    def stop(self) -> None:
        """
        Finish writing (at shutdown, after the drain): the recordings of
        consoles still open are finished first. A console the drain gave
        up on is aborted, and its end comes after the reactor stopped, if
        ever: without this its last records (held up to 10 ms, never
        handed over) and its END record were lost.
        """
        for recorder in list(self._open):
            recorder.shut_down()
        self.writer.stop()
