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
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
NOVNC = REPO / "node_modules" / "@novnc" / "novnc"
BIN = Path(sys.executable).parent
TWISTD = BIN / "twistd"
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

#: Bounds for waits on a slow, shared 2-core machine.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0

#: qemu's accelerators, best first: KVM when this machine lets us use it,
#: else TCG. TXVNC_E2E_ACCEL=tcg shows how the tests fare on a CI box
#: without KVM.
QEMU_ACCEL = os.environ.get("TXVNC_E2E_ACCEL", "kvm:tcg")

#: Environment variables that would make a test depend on the caller's shell.
_LEAKY_ENV = ("TXVNC_API_KEY", "TXVNC_API_URL", "TXVNC_NOVNC_DIR", "PYTHONPATH")


def _require(ok: bool, what: str) -> None:
    if not ok:
        pytest.fail(
            f"the e2e tests need {what}; run `make install` and "
            "`scripts/system-deps`, or deselect them with -m 'not e2e'",
            pytrace=False,
        )


def clean_env(**extra: str) -> dict[str, str]:
    """
    The environment for a child process: ours without txvnc's own variables.
    """
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.

    Another process may take it before we use it; callers that bind it
    retry with a new one when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """
    The free loopback port helper, as a fixture.
    """
    return free_port


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

    def wait_closed(self, timeout: float) -> None:
        self._thread.join(timeout)


def _stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    """
    Stop C{process} with C{sig}, killing it if it has not exited in time.
    """
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
            raise AssertionError(
                f"{process.args[0]} ignored signal {sig} for {STOP_TIMEOUT:g}s"
            ) from None
    return process.returncode


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


def _start_vm(tmp: Path, vnc_options: str = "", extra: tuple[str, ...] = ()) -> VM:
    """
    Start qemu; C{vnc_options} are appended to C{-vnc} (e.g.
    C{,password=on}) and C{extra} to the command line (e.g. an C{-object}).
    """
    # Start at a port nothing holds now; `to=` lets qemu move up a few
    # displays if something takes it first, and QMP tells us where it is.
    port = free_port()
    display = port - 5900 if port > 5900 else 100
    process = subprocess.Popen(
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
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp,
        env=clean_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    qmp = OutputWatcher(process.stdout, "qemu QMP", tmp / "qmp.log")
    errors = OutputWatcher(process.stderr, "qemu stderr", tmp / "qemu.log")
    vm = VM(process, qmp, errors, port=0, accel="?")
    started = False
    try:
        qmp.wait_for(r'^\{"QMP"')
        vm.command("qmp_capabilities")
        # The VNC server is listening once QMP can report it.
        vnc = vm.command("query-vnc")
        assert vnc["enabled"], f"qemu's VNC server is not enabled: {vnc}"
        vm.port = int(vnc["service"])
        vm.accel = "kvm" if vm.command("query-kvm")["enabled"] else "tcg"
        started = True
    except (AssertionError, KeyError, ValueError) as e:
        raise AssertionError(
            f"qemu did not start: {e}\nqemu's stderr:\n{errors.text()}"
        ) from None
    finally:
        if not started:
            process.kill()
            process.wait()
    return vm


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    """
    One VM for the module: it only has to draw SeaBIOS's screen.
    """
    _require(QEMU is not None, "qemu-system-x86_64")
    vm = _start_vm(tmp_path_factory.mktemp("qemu"))
    yield vm
    try:
        vm.command("quit")
    except (AssertionError, OSError):
        pass  # qemu is already gone; wait() below says so at once
    try:
        vm.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        vm.process.kill()
        vm.process.wait()


# twistd txvnc


@dataclass
class Console:
    """
    One minted console: its access URL and the token inside it.
    """

    url: str
    token: str


@dataclass
class TxvncServer:
    """
    A running C{twistd -n txvnc} with both the token API and the proxy.
    """

    process: subprocess.Popen[str]
    log: OutputWatcher
    directory: Path
    proxy_port: int
    api_port: int
    key_file: Path
    minted: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

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


def _start_txvnc(directory: Path, *extra: str) -> TxvncServer | None:
    """
    Start twistd on two fresh ports; L{None} when a port was taken before
    twistd could bind it.
    """
    proxy_port, api_port = free_port(), free_port()
    while api_port == proxy_port:
        api_port = free_port()
    key_file = directory / "txvnc-api.key"
    process = subprocess.Popen(
        [
            str(TWISTD), "-n", "--pidfile=", "txvnc",
            "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
            "--api-listen", f"tcp:{api_port}:interface=127.0.0.1",
            "--api-key-file", str(key_file),
            "--store", f"sqlite:{directory / 'tokens.sqlite'}",
            "--base-url", f"http://127.0.0.1:{proxy_port}",
            "--novnc", str(NOVNC),
            *extra,
            # qemu's VNC display is wherever a free port was found.
            "--allowed-target", "127.0.0.1:1024-65535",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=directory,
        env=clean_env(),
    )
    assert process.stdout is not None
    log = OutputWatcher(process.stdout, "twistd txvnc", directory / "twistd.log")
    server = TxvncServer(process, log, directory, proxy_port, api_port, key_file)
    try:
        for port in (api_port, proxy_port):
            found = log.wait_for_any(
                [rf"Site starting on {port}$", r"CannotListenError"],
                stop_at_end=False,
            )
            if found is None or found.group(0) == "CannotListenError":
                # Exited, or about to: a port was taken under us, or worse.
                code = process.wait(STOP_TIMEOUT)
                log.wait_closed(STOP_TIMEOUT)
                if re.search(r"Couldn't listen on .*Address already in use", log.text()):
                    return None
                raise AssertionError(
                    f"twistd txvnc exited with {code} while starting; "
                    f"its log:\n{log.text()}"
                )
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
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
    _require(TWISTD.is_file(), f"twistd in {BIN}")
    _require((NOVNC / "core" / "rfb.js").is_file(), f"noVNC in {NOVNC} (npm ci)")
    server = None
    for attempt in range(5):
        server = _start_txvnc(tmp_path_factory.mktemp(f"txvnc{attempt}"), *extra)
        if server is not None:
            break
    assert server is not None, "every port we picked was taken before twistd bound it"
    yield server

    code = _stop(server.process)
    server.log.wait_closed(STOP_TIMEOUT)
    log = server.log.text()
    # twistd stops its reactor on SIGTERM, then ends itself with the same
    # signal so its parent sees why it stopped: -SIGTERM is a clean exit.
    assert code in (0, -signal.SIGTERM), f"twistd txvnc exited with {code}:\n{log}"
    assert "Server Shut Down." in log, f"twistd did not shut down cleanly:\n{log}"
    assert "Traceback" not in log, f"twistd logged a traceback:\n{log}"
    leaked = [token for token in server.minted if token in log]
    assert not leaked, f"{len(leaked)} minted token(s) appear in the twistd log"


# The browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """
    One headless Chromium for the module (the system's: nothing is
    downloaded).
    """
    _require(os.access(CHROMIUM, os.X_OK), CHROMIUM)
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
    Keep each phase's report on the test item, and show twistd's log under
    any failing test that used it.
    """
    report = yield
    setattr(item, f"rep_{report.when}", report)
    server = getattr(item, "funcargs", {}).get("txvnc")
    if report.failed and isinstance(server, TxvncServer):
        report.sections.append(("twistd txvnc log", server.log.text()))
    return report
