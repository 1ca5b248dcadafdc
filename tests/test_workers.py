"""
The --workers option and the pieces of the worker pool that need no
processes (the real processes are in tests/scale/test_workers.py).
"""

import json
import os
import socket
from dataclasses import replace

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent
from twisted.python.usage import UsageError

from txvnc.service.workers import (
    WorkerPool,
    parse_tcp_listener,
    shared_listening_sockets,
    worker_config,
)
from txvnc.tap import Options, makeService


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "web").mkdir()
    return tmp_path


def options(*argv):
    config = Options()
    config.parseOptions(["--web", "web", "--store", "memory:", *argv])
    return config


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2", "--no-proxy"], "--workers needs the proxy"),
        (["--workers", "2", "--listen", "unix:/tmp/x.sock"], "needs a tcp: or tcp6:"),
        (["--workers", "2", "--listen", "ssl:6080"], "needs a tcp: or tcp6:"),
    ],
)
def test_bad_worker_options_are_usage_errors(argv, message):
    """Impossible --workers settings are refused before start-up, saying why."""
    with pytest.raises(UsageError, match=message):
        options(*argv)


def test_one_worker_is_the_classic_single_process():
    """--workers 1 (the default) serves the proxy from the twistd process itself."""
    top = makeService(options("--listen", "tcp:0", "--api-listen", "tcp:0"), MemoryReactorClock())
    assert not [s for s in top if isinstance(s, WorkerPool)]
    assert len([s for s in top if isinstance(s, StreamServerEndpointService)]) == 2


def test_workers_get_a_pool_and_the_api_stays():
    """--workers 3 builds a pool of three on one port and keeps the API listener here."""
    config = options(
        "--workers", "3", "--listen", "tcp:0:interface=127.0.0.1", "--api-listen", "tcp:0"
    )
    top = makeService(config, MemoryReactorClock())
    (pool,) = [s for s in top if isinstance(s, WorkerPool)]
    try:
        assert pool.count == 3
        ports = {s.getsockname() for s in pool.socks}
        assert len(ports) == 1
        assert len([s for s in top if isinstance(s, StreamServerEndpointService)]) == 1
    finally:
        pool._close_sockets(None)


@pytest.mark.parametrize(
    ("workers", "limit", "share"),
    [(1, 20, 20), (2, 20, 10), (3, 20, 7), (2, 5, 3), (2, 1, 1), (4, 0, 0)],
)
def test_workers_share_the_brute_force_limit(workers, limit, share):
    """Each worker is told its share of --max-auth-failures (rounded up; 0 stays no limit), so N workers do not let N times as many failures through."""
    config = options(
        "--workers", str(workers), "--max-auth-failures", str(limit),
        "--listen", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    assert worker_config(config.settings)["max-auth-failures"] == share


@pytest.mark.parametrize(
    ("workers", "limit", "share"),
    [(1, 64, 64), (2, 64, 32), (3, 64, 22), (4, 1, 1), (2, 0, 0)],
)
def test_workers_share_the_per_address_cap(workers, limit, share):
    """Each worker is told its share of --max-pending-per-address (rounded up; 0 stays no limit): the kernel spreads one client's connections over the workers, so together they hold about the cap, not N times it."""
    config = options(
        "--workers", str(workers), "--max-pending-per-address", str(limit),
        "--listen", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    assert worker_config(config.settings)["max-pending-per-address"] == share


def test_workers_metrics_directory_is_made_and_removed_with_the_pool():
    """--workers 2 gives the pool a private metrics directory, which goes when the pool stops."""
    config = options("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1")
    top = makeService(config, MemoryReactorClock())
    (pool,) = [s for s in top if isinstance(s, WorkerPool)]
    assert pool.metrics is not None
    assert os.path.isdir(pool.metrics.path)
    pool._close_sockets(None)
    assert not os.path.exists(pool.metrics.path)


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:6080", (socket.AF_INET, "", 6080, 50)),
        ("tcp:port=81:interface=127.0.0.1:backlog=500", (socket.AF_INET, "127.0.0.1", 81, 500)),
        ("tcp6:6080:interface=\\:\\:1", (socket.AF_INET6, "::1", 6080, 50)),
    ],
)
def test_parse_tcp_listener(description, expected):
    """tcp and tcp6 endpoint descriptions give family, interface, port and backlog."""
    assert parse_tcp_listener(description) == expected


def test_shared_sockets_share_one_port_and_are_inheritable():
    """Every worker's socket listens on the same port and survives exec."""
    socks = shared_listening_sockets("tcp:0:interface=127.0.0.1", 2)
    try:
        assert socks[0].getsockname() == socks[1].getsockname()
        assert all(s.get_inheritable() for s in socks)
        with socket.create_connection(socks[0].getsockname(), timeout=5):
            pass
    finally:
        for s in socks:
            s.close()


class FakeProcess:
    """What the pool uses of a spawned process's transport."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def signalProcess(self, sig: int) -> None:
        pass


class FlakySpawner(MemoryReactorClock):
    """A reactor whose second spawnProcess fails, as fork does when out of processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned = 0

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):
        self.spawned += 1
        if self.spawned == 2:
            raise OSError(11, "Resource temporarily unavailable")
        protocol.makeConnection(FakeProcess(1000 + self.spawned))
        return protocol.transport


def test_a_worker_that_cannot_be_restarted_is_tried_again():
    """When starting a dead worker again fails, the failure is logged and the pool tries again a moment later."""
    from twisted.internet.error import ProcessTerminated
    from twisted.logger import capturedLogs
    from twisted.python.failure import Failure

    reactor = FlakySpawner()
    socks = shared_listening_sockets("tcp:0:interface=127.0.0.1", 1)
    pool = WorkerPool(reactor, socks, {"drain-timeout": 1.0})
    try:
        pool.startService()
        (worker,) = pool.workers.values()
        with capturedLogs() as events:
            worker.processEnded(Failure(ProcessTerminated(exitCode=1)))
            reactor.advance(1)
            assert not pool.workers
            reactor.advance(1)
        assert reactor.spawned == 3
        assert pool.workers[1].pid == 1003
        (failed,) = [e for e in events if "log_failure" in e]
        assert failed["log_failure"].check(OSError)
    finally:
        pool.running = False
        pool._close_sockets(None)


def test_a_worker_builds_the_same_proxy_settings_from_what_it_is_told():
    """The options sent to a worker check again in the worker and give the proxy the parent's settings, without the API."""
    from txvnc.service.settings import Settings

    parent = options(
        "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
        "--allowed-origin", "https://a.example", "--idle-timeout", "60",
    ).settings  # fmt: skip
    makeService(options("--no-proxy"), MemoryReactorClock())  # writes the key file
    child = Settings.from_options(worker_config(parent))
    assert (parent.run_api, child.run_api, child.run_proxy) == (True, False, True)
    assert child.consoleauth_url == parent.consoleauth_url
    assert (child.web, child.novnc) == (parent.web, parent.novnc)
    assert child.allowed_origins == ("https://a.example",)
    # Each worker gets its share of the per-client limits.
    assert child.limits == replace(parent.limits, max_pending_per_address=32)
    assert child.node_name == parent.node_name
    assert child.max_auth_failures == 10


@pytest.mark.parametrize(
    "twistd_args, txvnc_args, where",
    [
        (["-n"], [], ("stdout", None, False)),
        (["-n", "--logfile", "-"], [], ("stdout", None, False)),
        (["-n", "--logfile", "x.log"], [], ("file", "x.log", False)),
        ([], [], ("file", "twistd.log", False)),
        (["-n", "--logfile", "x.log"], ["--log-format", "json"], ("stdout", None, True)),
        (["-n", "--syslog"], [], ("relay", None, False)),
    ],
)
def test_workers_log_where_twistd_logs(in_tmp, twistd_args, txvnc_args, where):
    """Workers write their lines where twistd writes its own (stdout, or the log file, which the twistd process then writes the same way); only syslog is relayed."""
    from twisted.scripts.twistd import ServerOptions

    from txvnc.ops.sharedlog import RotateOnSignal

    twistd = ServerOptions()
    twistd.parseOptions(
        [*twistd_args, "txvnc", "--web", "web", "--store", "memory:",
         "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", *txvnc_args]
    )  # fmt: skip
    top = makeService(twistd.subOptions, MemoryReactorClock())
    (pool,) = [s for s in top if isinstance(s, WorkerPool)]
    try:
        to, path, as_json = where
        assert (pool.log.to, pool.log.json) == (to, as_json)
        rotating = [s for s in top if isinstance(s, RotateOnSignal)]
        if to == "file":
            assert pool.log.path == str(in_tmp / path)
            assert top.log_observer is not None
            (rotate,) = rotating
            assert rotate.logfile.path == pool.log.path
            assert pool.logfile is rotate.logfile
        else:
            assert pool.log.path is None and pool.logfile is None and not rotating
        told = json.loads(pool.told(2))
        assert told["number"] == 2 and told["log"]["to"] == to
        assert told["options"]["no-api"] == 1
    finally:
        pool._close_sockets(None)


def test_relayed_worker_events_are_logged_here_named_for_the_worker(capsys):
    """Under --syslog or --logger a worker sends its events as JSON lines, which the twistd process logs whole (however the pipe splits them), named for the worker."""
    from twisted.logger import Logger, LogPublisher, capturedLogs

    from txvnc.service.workerlog import WorkerLog
    from txvnc.service.workers import WorkerProtocol

    log = Logger(namespace="txvnc.test", observer=LogPublisher(WorkerLog().observer(2)))
    log.info("console {n} opened", n=7)
    log.warn("second\nline")
    sent = capsys.readouterr().out.encode()
    worker = WorkerProtocol(None, 2, b"{}")
    with capturedLogs() as events:
        for n in range(0, len(sent), 5):
            worker.outReceived(sent[n : n + 5])
    assert [(e["log_system"], e["worker"], e["log_namespace"]) for e in events] == [
        ("txvnc-worker-2", 2, "txvnc.test")
    ] * 2
    assert [formatEvent(e) for e in events] == ["console 7 opened", "second\nline"]
