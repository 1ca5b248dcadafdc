"""
One log file written by several processes (txvnc.ops.sharedlog): whole
lines, rotation, and a rename followed; two real processes writing at
once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.processes import clean_env, spawn, stop
from txvnc.ops.sharedlog import DescriptorWriter, SharedLogFile, pipe_pieces

ROOT = Path(__file__).resolve().parents[2]


def test_writers_on_one_path_append_whole_lines(tmp_path):
    """Two writers on one path each append at the end, never over each other's lines."""
    path = tmp_path / "t.log"
    a, b = SharedLogFile(str(path)), SharedLogFile(str(path))
    for n in range(3):
        a.write(f"a{n}\n")
        b.write(f"b{n}\n".encode())
    assert path.read_text() == "a0\nb0\na1\nb1\na2\nb2\n"


def test_rotates_at_its_length_as_twistd_does(tmp_path):
    """The write that takes the file to its length renames it .1 (older ones shifted up), and the next begins a new one."""
    path = tmp_path / "t.log"
    log = SharedLogFile(str(path), rotate_length=10)
    for n in range(5):
        log.write(f"line{n}\n")  # 6 bytes
    assert path.read_text() == "line4\n"
    assert (tmp_path / "t.log.1").read_text() == "line2\nline3\n"
    assert (tmp_path / "t.log.2").read_text() == "line0\nline1\n"
    assert log.rotated() == [1, 2]


def test_a_rotation_by_another_process_is_followed_not_repeated(tmp_path):
    """When another writer has rotated the file, rotating again only reopens; every writer then writes to the new file."""
    path = tmp_path / "t.log"
    one, two = SharedLogFile(str(path)), SharedLogFile(str(path))
    one.write("old\n")
    two.write("old too\n")
    one.rotate()
    two.rotate()  # as when both got the signal
    one.write("new\n")
    two.write("new too\n")
    assert path.read_text() == "new\nnew too\n"
    assert (tmp_path / "t.log.1").read_text() == "old\nold too\n"
    assert not (tmp_path / "t.log.2").exists()


def test_a_file_renamed_away_is_begun_again(tmp_path):
    """A tool that renames the file (logrotate) needs no signal: the next write begins a new file."""
    path = tmp_path / "t.log"
    log = SharedLogFile(str(path), rotate_length=None)
    log.write("before\n")
    path.rename(tmp_path / "t.log.old")
    log.write("after\n")
    assert path.read_text() == "after\n"
    assert (tmp_path / "t.log.old").read_text() == "before\n"


def test_starts_on_a_descriptor_it_was_given(tmp_path):
    """A worker starts on the twistd process's own descriptor of the file (which it might not be allowed to open after twistd drops privileges), and moves to the new file after a rotation like any writer."""
    path = tmp_path / "t.log"
    parent = SharedLogFile(str(path))
    given = os.dup(parent.fileno())
    path.chmod(0o000)  # opening it again would fail (for a user without root)
    child = SharedLogFile(str(path), fd=given)
    child.write("child\n")
    assert child.fileno() == given
    path.chmod(0o644)
    parent.write("parent\n")
    parent.rotate()
    child.write("after\n")
    assert child.fileno() != given
    assert path.read_text() == "after\n"
    assert (tmp_path / "t.log.1").read_text() == "child\nparent\n"


def test_a_descriptor_writer_writes_each_event_at_once(tmp_path):
    """An event of several lines (a traceback) goes out in one write."""
    read, write = os.pipe()
    try:
        DescriptorWriter(write).write("one\ntwo\n")
        assert os.read(read, 100) == b"one\ntwo\n"
    finally:
        os.close(read)
        os.close(write)


WRITER = """
import sys
from txvnc.ops.sharedlog import SharedLogFile
name, path, count, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
log = SharedLogFile(path, rotate_length=200_000)
sys.stdin.readline()
for n in range(count):
    log.write(f"{name} {n:05d} " + name * width + "\\n")
"""


def test_two_processes_writing_at_once_never_break_a_line(tmp_path):
    """Two processes appending long lines at once, through rotations: every line lands once, whole, in one of the files."""
    path = tmp_path / "t.log"
    count, width = 3000, 3000
    env = clean_env(PYTHONPATH=str(ROOT))
    writers = [
        spawn(
            [sys.executable, "-c", WRITER, name, path, str(count), str(width)],
            env=env,
            stdin=True,
        )
        for name in "AB"
    ]
    for writer in writers:  # both start writing at once
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
    for writer in writers:
        assert writer.wait(120) == 0, writer.stdout.read() if writer.stdout else ""
        stop(writer)
    lines = []
    for log in tmp_path.glob("t.log*"):
        lines += log.read_text().splitlines()
    assert len(list(tmp_path.glob("t.log.*"))) > 10  # it rotated meanwhile
    for name in "AB":
        mine = sorted(line for line in lines if line.startswith(name))
        assert mine == [f"{name} {n:05d} " + name * width for n in range(count)]
    assert len(lines) == 2 * count


def test_a_file_that_cannot_be_opened_again_keeps_the_lines(tmp_path):
    """
    When the name no longer leads to the file and a new one cannot be
    opened there (here: something not a file took the name; in production
    a root-owned file a log rotator made, or a directory the workers may
    not write), the lines go on into the file held, as twistd's LogFile
    does, instead of each write raising (every line lost) until it can.
    """
    path = tmp_path / "t.log"
    log = SharedLogFile(str(path), rotate_length=10)
    log.write("one\n")
    os.rename(path, tmp_path / "t.log.old")
    path.mkdir()
    log.write("two\n")
    log.write("three\n")  # past the length: a rotation that cannot be made
    assert (tmp_path / "t.log.old").read_text() == "one\ntwo\nthree\n"
    path.rmdir()
    log.write("four\n")
    assert path.read_text() == "four\n"


def test_sigusr1_rotates_from_the_moment_the_service_starts(tmp_path):
    """
    RotateOnSignal takes SIGUSR1 when it starts, not only once the reactor
    runs: twistd installs no SIGUSR1 handler of its own when txvnc gives it
    the log observer, and until one is installed a SIGUSR1 (a log rotator
    sending it while the service starts) ends the twistd process.
    """
    import signal

    from twisted.internet.testing import MemoryReactor

    from txvnc.ops.sharedlog import RotateOnSignal

    before = signal.getsignal(signal.SIGUSR1)
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        service = RotateOnSignal(
            MemoryReactor(), SharedLogFile(str(tmp_path / "t.log"))
        )
        service.startService()  # the reactor is not running yet
        assert signal.getsignal(signal.SIGUSR1) == service._on_usr1
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_pipe_pieces_cut_at_line_ends_under_the_limit():
    """A long event is cut only after a newline; each piece fits the limit."""
    lines = [b"%03d " % i + b"x" * 40 + b"\n" for i in range(100)]
    data = b"".join(lines)
    pieces = pipe_pieces(data, limit=200)
    assert b"".join(pieces) == data
    assert all(len(p) <= 200 and p.endswith(b"\n") for p in pieces)
    assert len(pieces) > 1


def test_pipe_pieces_give_a_line_over_the_limit_a_piece_of_its_own():
    data = b"short\n" + b"y" * 50 + b"\nend"
    assert pipe_pieces(data, limit=20) == [b"short\n", b"y" * 50 + b"\n", b"end"]


PIPE_WRITER = """
import os, sys
from txvnc.ops.sharedlog import DescriptorWriter
name, count = sys.argv[1], int(sys.argv[2])
out = DescriptorWriter(1)
for i in range(count):
    # A traceback-sized event: many lines, 12 KiB in all.
    out.write("".join(f"{name} {i} {j} " + "z" * 100 + "\\n" for j in range(100)))
"""


def test_two_processes_writing_long_events_to_one_pipe_never_tear_a_line():
    """
    Events longer than PIPE_BUF from two processes on one pipe: every line
    arrives whole (before, a 12 KiB event was one write, which a pipe may
    interleave with another writer's anywhere).
    """
    read, write = os.pipe()
    procs = [
        subprocess.Popen([sys.executable, "-c", PIPE_WRITER, name, "200"], stdout=write)
        for name in ("alpha", "beta")
    ]
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    for p in procs:
        assert p.wait() == 0
    lines = data.split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == 2 * 200 * 100
    pattern = re.compile(rb"(alpha|beta) \d+ \d+ z{100}")
    torn = [line for line in lines if not pattern.fullmatch(line)]
    assert torn == []
