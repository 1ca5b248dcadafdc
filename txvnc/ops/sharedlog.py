"""
One log written by several processes: C{twistd txvnc --workers N}, whose
workers write their own lines instead of sending them to the twistd
process to write.

Each process writes each event (a line, or a traceback's lines) with one
C{write}: to a file every process opened itself with C{O_APPEND}
(L{SharedLogFile}), the kernel puts each write whole at the end, so no
process's line lands inside another's; to an inherited standard output
(L{DescriptorWriter}), the same holds for a file, and for a pipe up to
C{PIPE_BUF} (4 KiB): a longer event on a pipe (a traceback) is written in
pieces cut at line ends, each under C{PIPE_BUF}, so another process's line
may come between two of its lines but never inside one (a single line
over 4 KiB is the one exception).

twistd's own L{twisted.python.logfile.LogFile} cannot be shared: it writes
at the offset it remembers and counts only its own bytes towards rotating.
L{SharedLogFile} rotates as it does (the file renamed C{.1}, older ones
shifted up, a new one begun) when the file reaches L{ROTATE_LENGTH}, by
whichever process's write took it there, or on C{SIGUSR1} to the twistd
process (L{RotateOnSignal}); a lock on the directory lets one process
rotate at a time. Before each write a process checks that the name still
leads to the file it holds, and opens it again if not: every process
follows a rotation, txvnc's or a tool's that renames the file (one that
cannot open the new file keeps writing to the one it holds, as twistd's
LogFile does).
"""

from __future__ import annotations

import fcntl
import glob
import os
import select
import signal
import stat
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

#: Bytes at which the file is rotated, as twistd's C{--logfile} does.
ROTATE_LENGTH = 1_000_000


def _write_all(fd: int, data: bytes) -> None:
    """All of C{data} to C{fd}: one C{write} unless the kernel takes less."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _encoded(text: str | bytes) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else text


def pipe_pieces(data: bytes, limit: int = select.PIPE_BUF) -> list[bytes]:
    """
    C{data} cut at line ends into pieces of at most C{limit} bytes (a
    longer line is a piece of its own), which a pipe writes whole.
    """
    pieces: list[bytes] = []
    start = 0
    end = len(data)
    while start < end:
        if end - start <= limit:
            pieces.append(data[start:])
            break
        cut = data.rfind(b"\n", start, start + limit)
        if cut < 0:
            cut = data.find(b"\n", start + limit)
            cut = end - 1 if cut < 0 else cut
        pieces.append(data[start : cut + 1])
        start = cut + 1
    return pieces


class DescriptorWriter:
    """
    A text file over a descriptor this process shares (a worker's standard
    output, the twistd process's own): each C{write} is one system call.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        try:
            self._pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
        except OSError:
            self._pipe = False

    def write(self, text: str | bytes) -> None:
        data = _encoded(text)
        if self._pipe and len(data) > select.PIPE_BUF:
            for piece in pipe_pieces(data):
                _write_all(self.fd, piece)
        else:
            _write_all(self.fd, data)

    def flush(self) -> None:
        """Nothing is buffered."""


class SharedLogFile:
    """
    A log file any number of processes append to at once, each through its
    own L{SharedLogFile} on the same path (see the module's docstring).

    @param rotate_length: bytes at which a write rotates the file; L{None}
        never does.
    @param fd: a descriptor of the file already open for appending (a
        worker's, inherited from the twistd process, which opened the file
        before it dropped privileges, if it did), to write to until the
        file is rotated.
    """

    def __init__(
        self,
        path: str,
        rotate_length: int | None = ROTATE_LENGTH,
        fd: int | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self.directory = os.path.dirname(self.path)
        self.rotate_length = rotate_length
        self._fd = -1
        self._id = (0, 0)
        if fd is None:
            self._open()
        else:
            self._use(fd)

    def fileno(self) -> int:
        """The descriptor written to now (for a worker to inherit)."""
        return self._fd

    def _open(self) -> None:
        self._use(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666))

    def _use(self, fd: int) -> None:
        st = os.fstat(fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._id = fd, (st.st_dev, st.st_ino)

    def _current(self) -> bool:
        """Whether the path still names the file this process writes to."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._id

    def write(self, text: str | bytes) -> None:
        if not self._current():
            try:
                self._open()
            except OSError:
                # No new file can be opened there (a rotator's file this
                # process may not write): keep to the one held, as
                # twistd's LogFile does, rather than lose every line.
                pass
        _write_all(self._fd, _encoded(text))
        if self.rotate_length:
            # With O_APPEND the offset after a write is the file's end then.
            if os.lseek(self._fd, 0, os.SEEK_CUR) >= self.rotate_length:
                try:
                    self.rotate(self.rotate_length)
                except OSError:
                    pass  # the line is written; the next write tries again

    def flush(self) -> None:
        """Nothing is buffered."""

    def rotate(self, past: int | None = None) -> None:
        """
        Rename the file C{.1} (shifting older ones up) and begin a new one,
        unless another process has rotated it meanwhile, or (with C{past})
        it is smaller than C{past} bytes; either way, write to the file the
        name leads to from now on.
        """
        if not (os.access(self.directory, os.W_OK) and os.access(self.path, os.W_OK)):
            return  # twistd's LogFile keeps writing to the old file too
        lock = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._current() and (past is None or os.fstat(self._fd).st_size >= past):
                self._shift()
            self._open()
        finally:
            os.close(lock)  # and with it the lock

    def _shift(self) -> None:
        for number in sorted(self.rotated(), reverse=True):
            os.rename(f"{self.path}.{number}", f"{self.path}.{number + 1}")
        os.rename(self.path, f"{self.path}.1")

    def rotated(self) -> list[int]:
        """The numbers of the rotated files there are, in order."""
        numbers = []
        for name in glob.glob(glob.escape(self.path) + ".*"):
            suffix = name.rsplit(".", 1)[-1]
            if suffix.isdigit() and int(suffix) > 0:
                numbers.append(int(suffix))
        return sorted(numbers)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class RotateOnSignal(Service):
    """
    C{SIGUSR1} to the twistd process rotates its L{SharedLogFile}, as it
    rotates twistd's own log file; the workers follow by themselves (they
    ignore the signal, so one sent to the whole process group rotates
    once).
    """

    _log = Logger()

    def __init__(self, reactor: Any, logfile: SharedLogFile) -> None:
        self._reactor = reactor
        self.logfile = logfile

    def startService(self) -> None:
        super().startService()
        # At once, not when the reactor runs: twistd installs no SIGUSR1
        # handler when txvnc gives it the log observer, and the reactor
        # installs none at all, so until this one a SIGUSR1 would end the
        # process.
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._rotate)

    def _rotate(self) -> None:
        try:
            self.logfile.rotate()
        except OSError:
            self._log.failure("SIGUSR1: cannot rotate {path}", path=self.logfile.path)
        else:
            self._log.info("SIGUSR1: log rotated")
