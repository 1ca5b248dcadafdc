"""
Real processes for the end-to-end tests: a qemu VM whose VNC server listens
on loopback, a C{twistd txvnc} serving the token API and the proxy, the
C{txvnc} command, and a headless Chromium.

Every wait here waits for an event (a log line, a QMP answer, a page state)
with a generous bound, and says what it was waiting for when the bound runs
out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.processes import (
    clean_env,
    free_port,
)
from tests.twistd import Twistd, require, start_twistd
from tests.vncservers import QEMU, VM, start_vm

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
BIN = Path(sys.executable).parent
TXVNC = BIN / "txvnc"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

CLI_TIMEOUT = 60.0


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """
    The free loopback port helper, as a fixture.
    """
    return free_port


# The VM


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    """
    One VM for the module: it only has to draw SeaBIOS's screen.
    """
    require(QEMU is not None, "qemu-system-x86_64")
    vm = start_vm(tmp_path_factory.mktemp("qemu"))
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
