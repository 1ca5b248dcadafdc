"""
Real VNC servers: a diskless qemu (the end-to-end tests' VM, and with a
password and/or tls-creds-x509 for the RFB security proxy's tests), and
Xtigervnc with VncAuth or VeNCrypt (X509Vnc, X509None) and x11vnc for the
latter. Each waits for the server to listen, never sleeps, and is started
by L{tests.support.processes.spawn}, so it dies with the test run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    STOP_TIMEOUT,
    OutputWatcher,
    free_port,
    listen_on_free_port,
    spawn,
    stop,
)

XTIGERVNC = shutil.which("Xtigervnc")
X11VNC = shutil.which("x11vnc")
VNCPASSWD = shutil.which("tigervncpasswd") or shutil.which("vncpasswd")
QEMU = shutil.which("qemu-system-x86_64")

#: qemu's accelerators, best first: KVM when this machine lets us use it,
#: else TCG. TXVNC_E2E_ACCEL=tcg shows how the tests fare on a CI box
#: without KVM.
QEMU_ACCEL = os.environ.get("TXVNC_E2E_ACCEL", "kvm:tcg")

#: The password every test server asks for.
PASSWORD = "s3cret!"


def require(program: str | None, package: str) -> str:
    if program is None:
        pytest.fail(
            f"these tests need {package}; run `scripts/system-deps test`",
            pytrace=False,
        )
    return program


def password_file(directory: Path, password: str = PASSWORD) -> Path:
    """
    A TigerVNC password file made by C{vncpasswd -f}, as an operator would.
    """
    vncpasswd = require(VNCPASSWD, "tigervnc-tools (vncpasswd)")
    path = directory / "passwd"
    result = subprocess.run(
        [vncpasswd, "-f"], input=password.encode() + b"\n", capture_output=True, check=True
    )
    path.write_bytes(result.stdout)
    path.chmod(0o600)
    return path


@dataclass
class VM:
    """
    A running qemu with no disk (SeaBIOS: "No bootable device") whose VNC
    server listens on 127.0.0.1:C{port}; C{accel} is "kvm" or "tcg".
    """

    process: subprocess.Popen[str]
    qmp: OutputWatcher
    stderr: OutputWatcher
    port: int
    accel: str
    _qmp_lock: threading.Lock = field(default_factory=threading.Lock)

    def command(self, execute: str, **arguments: Any) -> Any:
        """
        Run a QMP command and return its answer's C{return} value.
        """
        with self._qmp_lock:
            since = self.qmp.mark()
            message: dict[str, Any] = {"execute": execute}
            if arguments:
                message["arguments"] = arguments
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            line = self.qmp.wait_for(r'^\{"(return|error)"', since=since).string
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"QMP {execute} failed: {answer['error']}")
        return answer["return"]

    def stop(self) -> None:
        """
        Quit through QMP; killed if it has not exited in time; always reaped.
        """
        try:
            self.command("quit")
        except (AssertionError, OSError):
            pass  # qemu is already gone; wait() below says so at once
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop(self.process, signal.SIGKILL, must_obey=False)
        self.qmp.wait_closed()
        self.stderr.wait_closed()


def start_vm(tmp: Path, vnc_options: str = "", extra: tuple[str, ...] = ()) -> VM:
    """
    Start qemu; C{vnc_options} are appended to C{-vnc} (e.g.
    C{,password=on}) and C{extra} to the command line (e.g. an C{-object}).
    """
    # Start at a port nothing holds now; `to=` lets qemu move up a few
    # displays if something takes it first, and QMP tells us where it is.
    port = free_port()
    display = port - 5900 if port > 5900 else 100
    process = spawn(
        [
            QEMU,
            "-display", "none",
            "-nodefaults",
            "-vga", "std",
            "-m", "64",
            "-name", "txvnc-e2e",
            "-machine", f"accel={QEMU_ACCEL}",
            "-vnc", f"127.0.0.1:{display},to={display + 50}{vnc_options}",
            "-qmp", "stdio",
            *extra,
        ],
        stdin=True,
        stderr=subprocess.PIPE,
        cwd=tmp,
    )
    assert process.stdout is not None and process.stderr is not None
    qmp = OutputWatcher(process.stdout, "qemu QMP", tmp / "qmp.log")
    errors = OutputWatcher(process.stderr, "qemu stderr", tmp / "qemu.log")
    vm = VM(process, qmp, errors, port=0, accel="?")
    try:
        qmp.wait_for(r'^\{"QMP"')
        vm.command("qmp_capabilities")
        # The VNC server is listening once QMP can report it.
        vnc = vm.command("query-vnc")
        assert vnc["enabled"], f"qemu's VNC server is not enabled: {vnc}"
        vm.port = int(vnc["service"])
        vm.accel = "kvm" if vm.command("query-kvm")["enabled"] else "tcg"
    except BaseException as e:
        stop(process, signal.SIGKILL, must_obey=False)
        if isinstance(e, AssertionError | KeyError | ValueError):
            raise AssertionError(
                f"qemu did not start: {e}\nqemu's stderr:\n{errors.text()}"
            ) from None
        raise
    return vm


@dataclass
class TigerVNC:
    """
    A running Xtigervnc listening on 127.0.0.1:C{port}.
    """

    process: subprocess.Popen[str]
    log: OutputWatcher
    port: int
    display: str


@contextmanager
def tigervnc(directory: Path, *security: str) -> Iterator[TigerVNC]:
    """
    Run Xtigervnc with the given security options (e.g. C{-SecurityTypes
    VncAuth -PasswordFile F}) on a free port, on a display it picks itself.
    """
    program = require(XTIGERVNC, "tigervnc-standalone-server")
    server = listen_on_free_port(
        lambda port: [
            program,
            "-displayfd", "1",
            "-rfbport", str(port),
            "-interface", "127.0.0.1",
            "-geometry", "640x480",
            "-depth", "24",
            "-desktop", "txvnc-test",
            *security,
        ],
        "Xtigervnc",
        r"created VNC server for screen 0",
        r"Address already in use|bind",
        cwd=directory,
        log_stderr=True,
    )  # fmt: skip
    try:
        assert server.process.stdout is not None
        displayfd = OutputWatcher(server.process.stdout, "Xtigervnc -displayfd")
        display = ":" + displayfd.wait_for(r"^\d+$").group(0)
        yield TigerVNC(server.process, server.log, server.port, display)
    finally:
        stop(server.process, must_obey=False)


@contextmanager
def x11vnc(directory: Path, display: str, *options: str) -> Iterator[int]:
    """
    Run x11vnc on an X display (an Xtigervnc's) with C{options}, such as
    C{-rfbversion 3.3}; yields its port.
    """
    program = require(X11VNC, "x11vnc")
    server = listen_on_free_port(
        lambda port: [
            program,
            "-display", display,
            "-rfbport", str(port),
            "-listen", "127.0.0.1",
            # Without it x11vnc also binds the port on IPv6 and, when
            # another process holds that, says "Address already in use"
            # though it serves on 127.0.0.1 all the same.
            "-noipv6",
            "-forever",
            "-shared",
            "-nolookup",
            *options,
        ],
        "x11vnc",
        r"^PORT=(\d+)$",
        r"Address already in use",
        cwd=directory,
    )  # fmt: skip
    try:
        yield server.port
    finally:
        stop(server.process, must_obey=False)


@contextmanager
def qemu(directory: Path, vnc_options: str, *extra: str) -> Iterator[VM]:
    """
    Run a diskless qemu whose VNC server has C{vnc_options} (for example
    C{,password=on,tls-creds=tls0}).
    """
    require(QEMU, "qemu-system-x86")
    vm = start_vm(directory, vnc_options, extra)
    try:
        yield vm
    finally:
        vm.stop()
