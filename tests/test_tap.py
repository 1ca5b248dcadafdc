"""
twistd txvnc's options and the services they build.
"""

import os
import stat

import pytest
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from txvnc.service.api import API_POLLED_PATHS
from txvnc.service.endpoints import listener_url
from txvnc.tap import Options, makeService


def options(*argv, cwd=None):
    config = Options()
    config.parseOptions(list(argv))
    return config


pytestmark = pytest.mark.usefixtures("in_tmp")


def test_defaults():
    """The embedded defaults: proxy on 6080, API on loopback 6081, SQLite."""
    config = options()
    assert config["listen"] == "tcp:6080"
    assert config["api-listen"] == "tcp:6081:interface=127.0.0.1"
    assert config["store"] == "sqlite:txvnc.sqlite"
    assert config["api-key-file"] == "txvnc-api.key"
    assert config.settings.consoleauth_url == "http://127.0.0.1:6081"
    assert config.settings.base_url.endswith(":6080")
    assert config["allowed-origin"] == []


def test_the_reactor_does_not_spin_unless_asked():
    """
    --poll-spin is 0 by default (no spinning; it bought nothing for a
    browser a millisecond away and cost CPU: docs/performance.md) and
    takes a window when asked.
    """
    assert options().settings.poll_spin == 0
    assert options("--poll-spin", "100").settings.poll_spin == 100


def test_allowed_origin_repeats():
    """--allowed-origin may be given several times."""
    config = options("--allowed-origin", "https://a.example", "--allowed-origin", "b")
    assert config["allowed-origin"] == ["https://a.example", "b"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--no-api", "--no-proxy"], "leave nothing to run"),
        (["--no-api"], "--no-api needs --consoleauth-url"),
        (["--no-api", "--consoleauth-url", "http://api:6081"], "does not exist"),
        (["--store", "redis:localhost"], "use memory:, sqlite:PATH or redis://"),
        (["--store", "redis://localhost/x"], "database must be a number"),
        (["--allowed-target", "10.0.0.0/8"], "HOST:PORTS"),
        (["--max-token-ttl", "0"], "must be positive"),
        (["--max-auth-failures", "-1"], "0 or more"),
        (["--poll-spin", "-1"], "--poll-spin must be 0 to 1000"),
        (["--redis-ca", "/no/such/ca.pem"], "--redis-ca /no/such/ca.pem: No such file"),
        (["--store", "rediss://h/x"], "database must be a number"),
        (["--poll-spin", "1001"], "--poll-spin must be 0 to 1000"),
        (["--connect-timeout", "0"], "--connect-timeout must be positive"),
        (["--listen", "unix:/tmp/x.sock"], "set --base-url"),
        (["--api-listen", "unix:/tmp/a.sock"], "set --consoleauth-url"),
        (["--store", "sqlite:/no/such/dir/t.sqlite"], "/no/such/dir does not exist"),
        (["--api-key-file", "/no/such/dir/k"], "/no/such/dir does not exist"),
    ],
)
def test_bad_options_are_usage_errors(argv, message):
    """Each misconfiguration is a usage error that names the fix."""
    with pytest.raises(UsageError, match=message):
        options(*argv)


def test_unusable_key_file_is_a_usage_error(tmp_path):
    """An empty key file stops start-up with a usage error."""
    key = tmp_path / "empty.key"
    key.write_text("")
    with pytest.raises(UsageError, match="is empty"):
        options("--api-key-file", str(key))


def test_missing_novnc_is_a_usage_error(monkeypatch, tmp_path):
    """Without noVNC the proxy refuses to start and says how to get it."""
    monkeypatch.setenv("TXVNC_NOVNC_DIR", str(tmp_path / "nothing"))
    monkeypatch.setattr("txvnc.proxy.site.Path.is_file", lambda self: False)
    with pytest.raises(UsageError, match="npm ci"):
        options()


def test_explicit_web_and_novnc_dirs_are_checked(tmp_path):
    """--web and --novnc naming the wrong directory are refused, not ignored."""
    with pytest.raises(UsageError, match=r"--web .*: no such directory"):
        options("--web", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match=r"no core/rfb\.js there"):
        options("--novnc", str(tmp_path))


@pytest.mark.parametrize(
    "description, url",
    [
        ("tcp:6081", "http://127.0.0.1:6081"),
        ("tcp:6081:interface=127.0.0.1", "http://127.0.0.1:6081"),
        ("tcp:port=7000:interface=0.0.0.0", "http://127.0.0.1:7000"),
        ("tcp:interface=10.1.2.3:port=7000", "http://10.1.2.3:7000"),
        (r"tcp6:6081:interface=\:\:1", "http://[::1]:6081"),
        ("tcp6:6081", "http://[::1]:6081"),
        ("ssl:6443:privateKey=k.pem", "https://127.0.0.1:6443"),
    ],
)
def test_listener_url(description, url):
    """The embedded API's URL is derived from its listener."""
    assert listener_url(description, "--x") == url


def test_make_service_builds_api_and_proxy(in_tmp):
    """By default the API, its purge timer and the proxy all run."""
    reactor = MemoryReactorClock()
    config = options("--store", "memory:", "--listen", "tcp:0", "--api-listen", "tcp:0")
    top = makeService(config, reactor)
    listeners = [s for s in top if isinstance(s, StreamServerEndpointService)]
    assert len(listeners) == 2
    assert [s for s in top if isinstance(s, TimerService)]
    key_file = in_tmp / "txvnc-api.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_split_roles(in_tmp):
    """--no-proxy runs only the API; --no-api runs only the proxy."""
    reactor = MemoryReactorClock()
    api_only = makeService(options("--no-proxy", "--store", "memory:"), reactor)
    assert len([s for s in api_only if isinstance(s, StreamServerEndpointService)]) == 1
    proxy_only = makeService(
        options("--no-api", "--consoleauth-url", "http://api:6081"), reactor
    )
    services = list(proxy_only)
    assert len([s for s in services if isinstance(s, StreamServerEndpointService)]) == 1
    assert not [s for s in services if isinstance(s, TimerService)]


def test_limit_options_reach_the_factory():
    """The limit options end up in the proxy factory's Limits and Autobahn's options."""
    config = options(
        "--idle-timeout", "600",
        "--max-session", "7200",
        "--max-connections", "100",
        "--max-connections-per-token", "2",
        "--keepalive-interval", "15",
        "--keepalive-timeout", "5",
        "--handshake-timeout", "8",
        "--max-message-size", "65536",
    )
    top = makeService(config, MemoryReactorClock())
    factory = next(
        s.factory.console_factory
        for s in top
        if isinstance(s, StreamServerEndpointService)
        and getattr(s.factory, "console_factory", None) is not None
    )
    limits = factory.limits
    assert (limits.idle_timeout, limits.max_session) == (600, 7200)
    assert factory.counter.max_total == 100
    assert factory.counter.max_per_token == 2
    assert factory.autoPingInterval == 15 and factory.autoPingTimeout == 5
    assert factory.openHandshakeTimeout == 8
    assert factory.maxMessagePayloadSize == 65536


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--idle-timeout", "-1"], "--idle-timeout must not be negative"),
        (["--max-connections", "-5"], "--max-connections must not be negative"),
        (["--keepalive-timeout", "0"], "--keepalive-timeout must be positive"),
        (["--max-message-size", "0"], "--max-message-size must be positive"),
    ],
)
def test_bad_limits(argv, message):
    """A limit that makes no sense is a usage error."""
    with pytest.raises(UsageError, match=message):
        options(*argv)


@pytest.mark.parametrize(
    ("argv", "api_quiet", "proxy_quiet"),
    [
        ((), (b"/healthz", b"/readyz", *API_POLLED_PATHS), (b"/novnc/", b"/healthz", b"/readyz")),
        (("--access-log-polls",), (), (b"/novnc/",)),
    ],
)  # fmt: skip
def test_machine_polls_stay_out_of_access_logs_unless_asked(in_tmp, argv, api_quiet, proxy_quiet):
    """Health checks, scrapes and the proxies' polls are left out of both access logs, and --access-log-polls puts them back."""
    config = options("--store", "memory:", "--listen", "tcp:0", "--api-listen", "tcp:0", *argv)
    top = makeService(config, MemoryReactorClock())
    sites = [s.factory for s in top if isinstance(s, StreamServerEndpointService)]
    proxy = [s for s in sites if hasattr(s.resource, "_websocket")]
    api = [s for s in sites if not hasattr(s.resource, "_websocket")]
    assert [s.quiet_paths for s in api] == [api_quiet]
    assert [s.quiet_paths for s in proxy] == [proxy_quiet]


def test_a_failed_purge_is_logged_and_purging_goes_on(in_tmp):
    """One failed purge is logged, and the purge timer still runs at the next interval."""
    from twisted.internet.defer import fail, succeed
    from twisted.logger import capturedLogs

    reactor = MemoryReactorClock()
    config = options("--no-proxy", "--store", "memory:", "--purge-interval", "60")
    top = makeService(config, reactor)
    (store,) = [s.store for s in top if hasattr(s, "store")]
    purged = []

    def purge(now):
        purged.append(now)
        return fail(RuntimeError("store blip")) if len(purged) == 1 else succeed(0)

    store.purge = purge
    (timer,) = [s for s in top if isinstance(s, TimerService)]
    with capturedLogs() as events:
        timer.startService()
        reactor.advance(60)
        reactor.advance(60)
    timer.stopService()
    assert purged == [0, 60, 120]
    (failed,) = [e for e in events if "log_failure" in e]
    assert failed["log_failure"].check(RuntimeError)
    assert "purging expired tokens" in failed["log_format"]
