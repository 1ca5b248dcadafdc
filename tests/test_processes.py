"""
The tests' own child processes die with the test run: L{tests.support.processes.spawn}
gives each a parent-death signal, so a killed pytest leaves no qemu, twistd or
VNC server behind.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest_twisted

from tests.support.processes import OutputWatcher, die_with_parent, spawn, stop
from tests.support.vncservers import QEMU, require

REPO = Path(__file__).resolve().parents[1]

#: A parent that starts a child (a long sleep with the helper or with plain
#: Popen, or the tests' qemu VM), prints its pid, and waits to be killed.
PARENT = """
import pathlib, subprocess, sys
from tests.support.processes import spawn
from tests.support.vncservers import start_vm
if sys.argv[1] == "spawn":
    child = spawn(["sleep", "600"])
elif sys.argv[1] == "qemu":
    child = start_vm(pathlib.Path(sys.argv[2])).process
else:
    child = subprocess.Popen(["sleep", "600"], stdout=subprocess.DEVNULL)
print(child.pid, flush=True)
sys.stdin.read()
"""

#: Bound for the kernel to deliver a signal and the child to end.
GONE_WITHIN = 30.0


@contextmanager
def orphan_of_killed_parent(how: str, *args: str) -> Iterator[int]:
    """
    Start a parent that starts a child C{how}, SIGKILL the parent, and yield
    a pidfd of the child (killed and closed afterwards, whatever happened).
    """
    parent = spawn([sys.executable, "-c", PARENT, how, *args], cwd=REPO, stdin=True)
    assert parent.stdout is not None
    try:
        out = OutputWatcher(parent.stdout, f"parent ({how})")
        child = int(out.wait_for(r"^(\d+)$").group(1))
        pidfd = os.pidfd_open(child)
    finally:
        assert stop(parent, signal.SIGKILL) == -signal.SIGKILL
    try:
        yield pidfd
    finally:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(pidfd)


def ended(pidfd: int, timeout: float) -> bool:
    """
    Whether the process behind C{pidfd} ends within C{timeout} (a pidfd is
    readable once its process has exited).
    """
    readable, _, _ = select.select([pidfd], [], [], timeout)
    return bool(readable)


def test_a_spawned_child_dies_with_its_killed_parent() -> None:
    """When a parent is killed with SIGKILL, the child it started with spawn() is killed too."""
    with orphan_of_killed_parent("spawn") as child:
        assert ended(child, GONE_WITHIN), "the child outlived its killed parent"


def test_the_qemu_vm_dies_with_its_killed_parent(tmp_path: Path) -> None:
    """The tests' qemu (on -qmp stdio) no longer outlives a test run killed with SIGKILL."""
    require(QEMU, "qemu-system-x86")
    with orphan_of_killed_parent("qemu", str(tmp_path)) as child:
        assert ended(child, GONE_WITHIN), "qemu outlived its killed parent"


def test_a_plain_child_outlives_its_killed_parent() -> None:
    """Without spawn(), the same child keeps running after its parent is killed (what the helper prevents)."""
    with orphan_of_killed_parent("popen") as child:
        assert not ended(child, 0.5), "a plain child died with its parent"


def test_the_signal_follows_the_forking_thread() -> None:
    """The kernel kills the child when the thread that forked it ends, so spawn() forks only on the main thread."""
    children: list[subprocess.Popen[bytes]] = []

    def fork() -> None:
        children.append(subprocess.Popen(["sleep", "600"], preexec_fn=die_with_parent()))

    thread = threading.Thread(target=fork)
    thread.start()
    thread.join()
    (child,) = children
    try:
        assert child.wait(GONE_WITHIN) == -signal.SIGKILL
    finally:
        stop(child, signal.SIGKILL, must_obey=False)

    failures: list[BaseException] = []

    def refuse() -> None:
        try:
            spawn(["true"])
        except RuntimeError as e:
            failures.append(e)

    thread = threading.Thread(target=refuse)
    thread.start()
    thread.join()
    assert len(failures) == 1 and "main thread" in str(failures[0])


@pytest_twisted.ensureDeferred
async def test_pytest_twisted_tests_run_on_the_main_thread() -> None:
    """pytest-twisted runs the reactor and the test in greenlets of the main thread, so its tests may spawn()."""
    assert threading.current_thread() is threading.main_thread()
    child = spawn(["true"])
    assert child.wait(GONE_WITHIN) == 0

