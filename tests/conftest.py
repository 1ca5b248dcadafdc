"""
Shared test set-up.
"""

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.logscan import SECRETS, leaks
from tests.support.redis_server import RedisServer
from tests.support.twistd import attach_logs

# CI machines are small and busy (a browser and a VM may run beside the
# property tests): judge properties, not the speed of one draw.
# The suite draws the same examples on every run (derandomize), so CI's
# verdict never depends on luck; HYPOTHESIS_PROFILE=explore draws new ones,
# as `make fuzz` does for the parsers with atheris.
settings.register_profile(
    "txvnc",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "explore",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=2000,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "txvnc"))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """
    Run in C{tmp_path} with a stand-in noVNC there (C{TXVNC_NOVNC_DIR}), as
    the tests that build txvnc's options or services need: the key files
    they create land there, and noVNC is found without an installed copy.
    Modules that want it for every test say
    C{pytestmark = pytest.mark.usefixtures("in_tmp")}.
    """
    monkeypatch.chdir(tmp_path)
    novnc = tmp_path / "novnc" / "core"
    novnc.mkdir(parents=True)
    (novnc / "rfb.js").write_text("export default class RFB {}")
    monkeypatch.setenv("TXVNC_NOVNC_DIR", str(tmp_path / "novnc"))
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """
    After the whole suite: no token, API key, secret key or VNC password in
    any twistd log a test kept (see tests/support/logscan.py).
    """
    yield
    from tests.support.vncservers import PASSWORD

    found = leaks(tmp_path_factory.getbasetemp(), [*SECRETS, PASSWORD])
    assert not found, "secrets in twistd logs:\n" + "\n".join(found[:50])


@pytest.fixture
def vnc() -> Iterator[Any]:
    """
    A scriptable stand-in VNC server on a free loopback port, in this
    process (L{tests.support.fakevnc.FakeVNCServer}), stopped after the test.
    """
    import pytest_twisted

    from tests.support.fakevnc import FakeVNCServer

    server = FakeVNCServer()
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """
    Show the log of every twistd a failing test used (as a fixture) under
    its report.
    """
    report = yield
    if report.failed:
        attach_logs(item, report)
    return report


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """
    One real redis-server for the whole run; tests keep apart by database
    number or key prefix.
    """
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


_databases = itertools.count(1)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """
    A database of the shared Redis that no other test in this run uses.
    """
    db = next(_databases) % 64
    redis_server.flush(db)
    return redis_server.url(db)
