"""
Real VNC servers for the RFB security proxy's tests: Xtigervnc with
VncAuth or VeNCrypt (X509Vnc, X509None), and qemu with a password and/or
tls-creds-x509. Each waits for the server to listen, never sleeps.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    STOP_TIMEOUT,
    VM,
    OutputWatcher,
    _start_vm,
    clean_env,
    free_port,
)

XTIGERVNC = shutil.which("Xtigervnc")
X11VNC = shutil.which("x11vnc")
VNCPASSWD = shutil.which("tigervncpasswd") or shutil.which("vncpasswd")
QEMU = shutil.which("qemu-system-x86_64")

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
    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [
                program,
                "-displayfd", "1",
                "-rfbport", str(port),
                "-interface", "127.0.0.1",
                "-geometry", "640x480",
                "-depth", "24",
                "-desktop", "txvnc-test",
                *security,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=directory,
            env=clean_env(),
        )
        assert process.stderr is not None and process.stdout is not None
        log = OutputWatcher(process.stderr, "Xtigervnc")
        displayfd = OutputWatcher(process.stdout, "Xtigervnc -displayfd")
        found = log.wait_for_any(
            [r"created VNC server for screen 0", r"Address already in use|bind"],
            stop_at_end=False,
        )
        if found is not None and found.group(0).startswith("created"):
            break
        process.kill()
        process.wait()
    else:
        raise AssertionError(f"Xtigervnc did not start:\n{log.text()}")
    display = ":" + displayfd.wait_for(r"^\d+$").group(0)
    try:
        yield TigerVNC(process, log, port, display)
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def x11vnc(directory: Path, display: str, *options: str) -> Iterator[int]:
    """
    Run x11vnc on an X display (an Xtigervnc's) with C{options}, such as
    C{-rfbversion 3.3}; yields its port.
    """
    program = require(X11VNC, "x11vnc")
    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [
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
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=directory,
            env=clean_env(),
        )
        assert process.stdout is not None
        log = OutputWatcher(process.stdout, "x11vnc")
        found = log.wait_for_any([r"^PORT=(\d+)$", r"Address already in use"], stop_at_end=False)
        if found is not None and found.group(0).startswith("PORT="):
            break
        process.kill()
        process.wait()
    else:
        raise AssertionError(f"x11vnc did not start:\n{log.text()}")
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def qemu(directory: Path, vnc_options: str, *extra: str) -> Iterator[VM]:
    """
    Run a diskless qemu whose VNC server has C{vnc_options} (for example
    C{,password=on,tls-creds=tls0}).
    """
    require(QEMU, "qemu-system-x86")
    vm = _start_vm(directory, vnc_options, extra)
    try:
        yield vm
    finally:
        try:
            vm.command("quit")
        except (AssertionError, OSError):
            pass
        try:
            vm.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            vm.process.kill()
            vm.process.wait()
