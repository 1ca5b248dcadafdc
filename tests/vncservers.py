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

from tests.e2e.conftest import VM, _start_vm
from tests.processes import OutputWatcher, listen_on_free_port, stop

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
    vm = _start_vm(directory, vnc_options, extra)
    try:
        yield vm
    finally:
        vm.stop()
