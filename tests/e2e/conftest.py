"""
Real processes for the end-to-end tests: a qemu VM whose VNC server listens
on loopback, a C{twistd txvnc} serving the token API and the proxy, the
C{txvnc} command, and a headless Chromium.

Every wait here waits for an event (a log line, a QMP answer, a page state)
with a generous bound, and says what it was waiting for when the bound runs
out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.processes import (
    STOP_TIMEOUT,
    OutputWatcher,
    clean_env,
    free_port,
    spawn,
    stop,
)
from tests.twistd import Twistd, require, start_twistd

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
BIN = Path(sys.executable).parent
TXVNC = BIN / "txvnc"
QEMU = shutil.which("qemu-system-x86_64")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

CLI_TIMEOUT = 60.0

#: qemu's accelerators, best first: KVM when this machine lets us use it,
#: else TCG. TXVNC_E2E_ACCEL=tcg shows how the tests fare on a CI box
#: without KVM.
QEMU_ACCEL = os.environ.get("TXVNC_E2E_ACCEL", "kvm:tcg")

@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """
    The free loopback port helper, as a fixture.
    """
    return free_port


# The VM


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


def _start_vm(tmp: Path, vnc_options: str = "", extra: tuple[str, ...] = ()) -> VM:
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


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    """
    One VM for the module: it only has to draw SeaBIOS's screen.
    """
    require(QEMU is not None, "qemu-system-x86_64")
    vm = _start_vm(tmp_path_factory.mktemp("qemu"))
    yield vm
    vm.stop()


# twistd txvnc


@dataclass
class Console:
    """
    One minted console: its access URL and the token inside it.
    """

    url: str
    token: str


class TxvncServer(Twistd):
    """
    A running C{twistd -n txvnc} with both the token API and the proxy, and
    the C{txvnc} command pointed at it.
    """

    def cli(
        self, *args: str, api_url: str | None = None, key_file: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{txvnc --api-url ... --api-key-file ... ARGS}.
        """
        return run_cli(
            "--api-url", api_url or self.api_url,
            "--api-key-file", str(key_file or self.key_file),
            *args,
            cwd=self.directory,
        )

    def create_console(self, host: str, port: int, instance_uuid: str) -> Console:
        """
        Mint a console with C{txvnc console create} and read its URL.
        """
        result = self.cli(
            "console", "create",
            "--host", host,
            "--port", str(port),
            "--instance-uuid", instance_uuid,
        )
        assert result.returncode == 0, f"console create failed: {result.stderr}"
        found = re.search(r"^\| novnc +\| (\S+) +\|$", result.stdout, re.MULTILINE)
        assert found, f"no novnc URL in:\n{result.stdout}"
        url = found.group(1)
        token = re.fullmatch(r".*/vnc_auto\.html\?token=([A-Za-z0-9_-]+)", url)
        assert token, f"no token in the access URL {url}"
        self.minted.append(token.group(1))
        return Console(url, token.group(1))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """
    The C{txvnc} command of the venv running the tests.
    """
    return subprocess.run(
        [str(TXVNC), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=CLI_TIMEOUT,
    )


def start_txvnc(directory: Path, *extra: str) -> TxvncServer:
    """
    C{twistd txvnc EXTRA} (API and proxy) with a SQLite store in
    C{directory}, once it listens.
    """
    server: TxvncServer = start_twistd(
        directory,
        *extra,
        store=f"sqlite:{directory / 'tokens.sqlite'}",
        kind=TxvncServer,
    )
    return server


@pytest.fixture(scope="module")
def txvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TxvncServer]:
    """
    One C{twistd txvnc} for the module, in its own directory with its own
    key file and SQLite store; at the end it must stop cleanly and its log
    must not hold any token it minted.
    """
    yield from serve_txvnc(tmp_path_factory)


def serve_txvnc(
    tmp_path_factory: pytest.TempPathFactory, *extra: str
) -> Iterator[TxvncServer]:
    """
    The body of the L{txvnc} fixture, for fixtures that add options
    (C{extra}) to the twistd command line.
    """
    server = start_txvnc(tmp_path_factory.mktemp("txvnc"), *extra)
    yield server
    server.stop()


# The browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """
    One headless Chromium for the module (the system's: nothing is
    downloaded).
    """
    require(os.access(CHROMIUM, os.X_OK), CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """
    A fresh page in a fresh browser context; its screenshot is saved to
    C{tests/artifacts/} when the test fails.
    """
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and not page.is_closed():
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failed.png"))
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """
    Keep each phase's report on the test item (for the page's screenshot).
    """
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
