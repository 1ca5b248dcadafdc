"""
Real processes for the end-to-end tests: a qemu VM whose VNC server listens
on loopback, a C{twistd txvnc} serving the token API and the proxy (with the
C{txvnc} command pointed at it: L{tests.support.twistd.Twistd.cli}), and a
headless Chromium.

Every wait here waits for an event (a log line, a QMP answer, a page state)
with a generous bound, and says what it was waiting for when the bound runs
out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.novacell import Nova, serve_nova
from tests.support.processes import free_port
from tests.support.twistd import Twistd, require, start_twistd
from tests.support.vncservers import QEMU, VM, start_vm

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


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


@pytest.fixture(scope="module")
def txvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    One C{twistd txvnc} for the module, in its own directory with its own
    key file and SQLite store; at the end it must stop cleanly and its log
    must not hold any token it minted.
    """
    yield from serve_txvnc(tmp_path_factory)


def serve_txvnc(
    tmp_path_factory: pytest.TempPathFactory, *extra: str
) -> Iterator[Twistd]:
    """
    The body of the L{txvnc} fixture, for fixtures that add options
    (C{extra}) to the twistd command line.
    """
    directory = tmp_path_factory.mktemp("txvnc")
    server = start_twistd(directory, *extra, store=sqlite_store(directory))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nova(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nova]:
    """
    A nova cell made by nova's own code and C{twistd txvnc --nova-config}
    serving it (L{tests.support.novacell.serve_nova}).
    """
    yield from serve_nova(tmp_path_factory.mktemp("nova"))


def sqlite_store(directory: Path) -> str:
    """
    A SQLite token store in C{directory}: the end-to-end tests use the
    store a single host would.
    """
    return f"sqlite:{directory / 'tokens.sqlite'}"


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
