"""
Child processes for the tests, all started and stopped one way.

Every long-lived child a test starts (twistd, qemu, Xtigervnc, x11vnc,
redis-server, haproxy, the hostile suite's stand-in VNC server) goes through
L{spawn}, so:

- it gets C{PR_SET_PDEATHSIG} = C{SIGKILL}: when the test run dies, even by
  C{SIGKILL}, the kernel kills the child too, and nothing (a qemu on
  C{-qmp stdio}, a twistd holding a port) is left running;
- its environment is ours without txvnc's own variables (L{clean_env});
- L{OutputWatcher} collects its output line by line, copies it to a file
  for later checks, and lets the test wait for a line (an event, never a
  sleep);
- L{stop} ends it with a signal, then C{SIGKILL} after a bound, and always
  reaps it.

Servers listen on loopback ports picked by L{free_port}; a port can be taken
by someone else before the child binds it, so starters retry with a new one.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

#: Bounds for waits on a slow, shared 2-core machine.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

#: How many fresh ports a starter tries before it gives up.
PORT_TRIES = 5

#: Environment variables that would make a test depend on the caller's shell.
_LEAKY_ENV = ("TXVNC_API_KEY", "TXVNC_API_URL", "TXVNC_NOVNC_DIR", "PYTHONPATH")

#: prctl(2) option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.

    Another process may take it before we use it; callers that bind it
    retry with a new one when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """
    C{count} different free loopback ports.
    """
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def clean_env(**extra: str) -> dict[str, str]:
    """
    The environment for a child process: ours without txvnc's own variables.
    """
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def die_with_parent(open_files: int | None = None) -> Callable[[], None]:
    """
    A C{preexec_fn} that makes the child get C{SIGKILL} when its parent dies.

    The kernel sends the signal when the I{thread} that forked the child
    ends, not the process, so L{spawn} only forks from the main thread
    (pytest-twisted runs the reactor in a greenlet on that same thread).
    If the parent died between the fork and the C{prctl}, the child ends
    itself at once. With C{open_files}, it also sets the child's
    C{RLIMIT_NOFILE}.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:
            os._exit(127)
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    return preexec


def spawn(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: bool = False,
    stderr: int | None = subprocess.STDOUT,
    open_files: int | None = None,
) -> subprocess.Popen[str]:
    """
    Start C{argv} as a child that dies with this process.

    Its stdout is a text pipe (hand it to an L{OutputWatcher}); C{stderr} is
    merged into it by default, or C{subprocess.PIPE} for a pipe of its own;
    C{stdin} gives it a pipe to write to; C{open_files} sets its
    C{RLIMIT_NOFILE} (soft and hard) before it runs.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "spawn() forks only from the main thread: the child's parent-death "
            "signal fires when the forking thread ends"
        )
    return subprocess.Popen(
        [str(a) for a in argv],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        preexec_fn=die_with_parent(open_files),
    )


def stop(
    process: subprocess.Popen[Any],
    sig: int = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT,
    *,
    must_obey: bool = True,
) -> int:
    """
    Stop C{process} with C{sig}, then C{SIGKILL} if it has not exited within
    C{timeout}; it is always reaped. Returns its exit status (negative for a
    signal).

    @raise AssertionError: when it had to be killed and C{must_obey}.
    """
    if process.poll() is None:
        try:
            process.send_signal(sig)
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
            if must_obey:
                raise AssertionError(
                    f"{process.args[0]} ignored signal {sig} for {timeout:g}s"
                ) from None
    return process.wait()


@contextmanager
def reaped(process: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """
    Kill and reap C{process} if the block it guards raises.
    """
    try:
        yield process
    except BaseException:
        if process.poll() is None:
            process.kill()
        process.wait(STOP_TIMEOUT)
        raise


class OutputWatcher:
    """
    Collects a child's output line by line on a thread and lets the test wait
    for a line matching a pattern, or for the stream to end.
    """

    def __init__(self, stream: IO[str], name: str, copy_to: Path | None = None) -> None:
        self.name = name
        self._lines: list[str] = []
        self._closed = False
        self._changed = threading.Condition()
        self._copy = copy_to.open("w", encoding="utf-8") if copy_to else None
        self._thread = threading.Thread(
            target=self._read, args=(stream,), name=f"watch-{name}", daemon=True
        )
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                if self._copy is not None:
                    self._copy.write(line)
                    self._copy.flush()
                with self._changed:
                    self._lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        finally:
            if self._copy is not None:
                self._copy.close()
            with self._changed:
                self._closed = True
                self._changed.notify_all()

    def mark(self) -> int:
        """
        Where the output is now; pass it as C{since} to ignore older lines.
        """
        with self._changed:
            return len(self._lines)

    def lines(self, since: int = 0) -> list[str]:
        with self._changed:
            return self._lines[since:]

    def text(self, since: int = 0) -> str:
        return "\n".join(self.lines(since))

    def wait_for(
        self, pattern: str, since: int = 0, timeout: float = START_TIMEOUT
    ) -> re.Match[str]:
        """
        The first line from C{since} on matching C{pattern}, waiting for it.

        @raise AssertionError: when the stream ends or C{timeout} passes
            first; the message holds the output so far.
        """
        found = self.wait_for_any([pattern], since, timeout)
        assert found is not None
        return found

    def wait_for_any(
        self,
        patterns: list[str],
        since: int = 0,
        timeout: float = START_TIMEOUT,
        stop_at_end: bool = True,
    ) -> re.Match[str] | None:
        """
        The first line matching any of C{patterns}; L{None} if the stream
        ended first and not C{stop_at_end}.
        """
        regexes = [re.compile(p) for p in patterns]
        deadline = time.monotonic() + timeout
        seen = since
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    for regex in regexes:
                        found = regex.search(line)
                        if found:
                            return found
                seen = len(self._lines)
                if self._closed:
                    if not stop_at_end:
                        return None
                    raise AssertionError(
                        f"{self.name} ended before printing a line matching "
                        f"{patterns}; its output:\n{self.text()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no line matching {patterns} from {self.name} within "
                        f"{timeout:g}s; its output:\n{self.text()}"
                    )
                self._changed.wait(remaining)

    def wait_closed(self, timeout: float = STOP_TIMEOUT) -> None:
        self._thread.join(timeout)


@dataclass
class Listening:
    """
    A child listening on C{port}; C{log} watches the stream that said so,
    C{ready} is the line that did.
    """

    process: subprocess.Popen[str]
    log: OutputWatcher
    port: int
    ready: re.Match[str]


def listen_on_free_port(
    command: Callable[[int], Sequence[str | Path]],
    name: str,
    ready: str,
    taken: str,
    *,
    cwd: Path | None = None,
    log_path: Path | None = None,
    log_stderr: bool = False,
) -> Listening:
    """
    Start C{command(port)} on a free port, again on a new one while it says
    C{taken}, until it prints C{ready}.

    @param log_stderr: watch its stderr (stdout is then left for the caller
        to read), instead of both merged on stdout.
    @raise AssertionError: when it failed otherwise, or every port was taken.
    """
    for _ in range(PORT_TRIES):
        port = free_port()
        process = spawn(
            command(port),
            cwd=cwd,
            stderr=subprocess.PIPE if log_stderr else subprocess.STDOUT,
        )
        stream = process.stderr if log_stderr else process.stdout
        assert stream is not None
        log = OutputWatcher(stream, name, log_path)
        try:
            found = log.wait_for_any([ready, taken], stop_at_end=False)
        except BaseException:
            stop(process, signal.SIGKILL, must_obey=False)
            raise
        if found is not None and re.search(ready, found.group(0)):
            return Listening(process, log, port, found)
        stop(process, must_obey=False)
        if found is None:
            raise AssertionError(f"{name} exited while starting:\n{log.text()}")
    raise AssertionError(f"{name}: every port we picked was taken:\n{log.text()}")
