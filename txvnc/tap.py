"""
C{twistd txvnc}: options in, services out.

This is the only module that sees the whole: it reads the options, builds
the token store, the token API and the proxy, and hands them to twistd as
one L{MultiService}. Everything it builds takes the reactor as an argument.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import IService, Service
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Site

from txvnc import __version__
from txvnc.client import DEFAULT_TIMEOUT, ConsoleAuthClient, pooled_http_client
from txvnc.consoleauth.keys import (
    PROXY,
    KeyFileError,
    KeyRing,
    load_or_create_key_file,
    read_key_file,
)
from txvnc.consoleauth.resource import (
    MAX_BODY,
    MAX_REPORT_BODY,
    ConsoleAuthResource,
)
from txvnc.consoleauth.secretbox import SecretBox
from txvnc.consoleauth.store import ITokenStore, UnknownStore
from txvnc.consoleauth.stores import (
    STORE_FORMS,
    parse_store_description,
    redact_store_description,
    store_from_string,
)
from txvnc.consoleauth.tokens import MAX_TTL, SECURITY_MODES
from txvnc.core.accesslog import access_log_formatter_for
from txvnc.core.audit import AuditLog
from txvnc.core.forwarded import parse_networks
from txvnc.core.guarded import GuardedSite
from txvnc.core.pem import load_ca
from txvnc.core.targets import DEFAULT_RULES, PolicyError, TargetPolicy
from txvnc.ops.health import (
    HEALTH_PATHS,
    Readiness,
    WithOps,
    http_ok,
    ops_children,
)
from txvnc.ops.logs import JSONLineObserver, LoggedService
from txvnc.ops.metrics import MetricsResource, PrometheusConsoleEvents, ProxyCollector
from txvnc.ops.reload import ReloadHooks
from txvnc.ops.sharedmetrics import WorkerMetricsDirectory
from txvnc.ops.shutdown import DrainService, SignalService
from txvnc.ops.spin import DEFAULT_SPIN_US, MAX_SPIN_US, SpinService
from txvnc.proxy.guard import DEFAULT_MAX_FAILURES, AuthFailureGuard
from txvnc.proxy.options import LIMIT_PARAMETERS, check_limits, limits_from
from txvnc.proxy.revocation import DEFAULT_INTERVAL
from txvnc.proxy.security import RFBConfig, VNCTLSConfig
from txvnc.proxy.site import console_site, find_novnc, is_novnc
from txvnc.proxy.websocket import ConsoleProxyFactory
from txvnc.service.config import apply_config, config_path, load_config
from txvnc.service.endpoints import default_base_url, listener_url, node_name
from txvnc.service.tls import (
    TLSConfigError,
    TLSServerEndpoint,
    load_options,
    parse_ssl_description,
    server_endpoint,
)
from txvnc.service.workers import (
    WorkerPool,
    parse_tcp_listener,
    shared_listening_sockets,
)

_log = Logger()

#: A token hash no token has: what the readiness check looks up.
NO_SUCH_TOKEN = "0" * 64

DEFAULT_LISTEN = "tcp:6080"
DEFAULT_API_LISTEN = "tcp:6081:interface=127.0.0.1"

#: Token API paths that machines ask all the time, kept out of the access
#: log when they succeed (see GuardedSite's quiet_paths).
API_POLLED_PATHS = (b"/metrics", b"/v1/revocations", b"/v1/proxies/")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Runs the txvnc console proxy and its token API. By default both run "
        "in this process: the API mints short-lived tokens (POST /v1/tokens "
        "with Authorization: Bearer KEY, the key read from --api-key-file, "
        "created on first start), and the proxy serves the console page and "
        "turns each browser WebSocket carrying a valid token into a TCP "
        "connection to the token's VNC server. --no-api runs the proxy alone "
        "against a remote --consoleauth-url; --no-proxy runs the API alone. "
        "Listeners are Twisted endpoint strings (tcp:, ssl:, unix:, systemd:). "
        "The API key file holds one key a line, 'ROLE KEY' with ROLE admin, "
        "proxy or admin,proxy (a bare KEY has both roles); it is re-read on "
        "SIGHUP. Tokens may only name targets allowed by --allowed-target "
        "(default: " + ", ".join(DEFAULT_RULES) + "); the proxy checks again "
        "before connecting. Revoking a token or an instance closes its open "
        "consoles on every proxy (close code 4001)."
    )

    optFlags = [
        ["no-api", None, "Do not run the token API (use --consoleauth-url)."],
        ["no-proxy", None, "Do not run the console proxy."],
        [
            "access-log-polls",
            None,
            (
                "Also log successful health checks, metrics scrapes and the "
                "proxies' revocation polls and session reports in the access log."
            ),
        ],
    ]

    optParameters = [
        ["listen", None, DEFAULT_LISTEN, "Proxy listener: console page and WebSocket."],
        ["api-listen", None, DEFAULT_API_LISTEN, "Token API listener."],
        [
            "api-key-file",
            None,
            "txvnc-api.key",
            (
                "API keys file (ROLE KEY a line; see docs/api.md); created with "
                "one admin+proxy key (mode 0600) when missing."
            ),
        ],
        ["store", None, "sqlite:txvnc.sqlite", f"Token store: {STORE_FORMS}."],
        [
            "consoleauth-url",
            None,
            None,
            "Token API the proxy checks tokens with. [default: the embedded API]",
        ],
        [
            "base-url",
            None,
            None,
            "Public base of access URLs. [default: http://<hostname>:<proxy port>]",
        ],
        [
            "web",
            None,
            None,
            (
                "Serve this noVNC tree at / instead of txvnc's page "
                "(e.g. /usr/share/novnc)."
            ),
        ],
        [
            "novnc",
            None,
            None,
            (
                "noVNC package directory for txvnc's page. "
                "[default: ./node_modules/@novnc/novnc, then /usr/share/novnc]"
            ),
        ],
        [
            "token-check-timeout",
            None,
            DEFAULT_TIMEOUT,
            "Seconds to wait for the token API.",
            float,
        ],
        [
            "connect-timeout",
            None,
            10.0,
            "Seconds to wait for a VNC server to accept.",
            float,
        ],
        [
            "secret-key-file",
            None,
            "txvnc-secret.key",
            (
                "File holding the key that encrypts VNC passwords in the token "
                "store; created (mode 0600) when missing."
            ),
        ],
        [
            "vnc-security",
            None,
            None,
            (
                "Security toward VNC servers for tokens that name none: none, "
                "vnc or vencrypt. [default: relay the browser's RFB untouched]"
            ),
        ],
        [
            "vnc-ca-cert",
            None,
            None,
            "PEM CA that VeNCrypt servers' certificates must chain to.",
        ],
        [
            "vnc-client-cert",
            None,
            None,
            "PEM client certificate presented to VeNCrypt servers.",
        ],
        [
            "vnc-client-key",
            None,
            None,
            "PEM key of --vnc-client-cert. [default: in the certificate file]",
        ],
        [
            "purge-interval",
            None,
            60.0,
            "Seconds between purges of expired tokens.",
            float,
        ],
        [
            "workers",
            None,
            1,
            (
                "Proxy processes sharing the --listen port (tcp: only); the "
                "API stays in this process, which restarts any worker that dies."
            ),
            int,
        ],
        *LIMIT_PARAMETERS,
        [
            "poll-spin",
            None,
            DEFAULT_SPIN_US,
            (
                "Microseconds a proxy process keeps polling before it sleeps "
                "while traffic flows; cuts round trips, costs at most 2% of a "
                "core in polls that find nothing (0: always sleep)."
            ),
            float,
        ],
        [
            "drain-timeout",
            None,
            10.0,
            ("On SIGTERM, seconds open consoles get to close after being told "
            "(close code 1001) before they are dropped."),
            float,
        ],
        [
            "config",
            None,
            None,
            ("Read options from this TOML file first; the command line wins "
            "(see docs/txvnc.toml.example)."),
        ],
        [
            "consoleauth-ca",
            None,
            None,
            ("PEM CA certificate the token API's https certificate must chain "
            "to. [default: the system's trusted CAs]"),
        ],
        [
            "redis-ca",
            None,
            None,
            ("PEM CA certificate a rediss:// store's server certificate must "
            "chain to. [default: the system's trusted CAs]"),
        ],
        [
            "log-format",
            None,
            "text",
            ("text: twistd's log lines; json: one JSON object per line on "
            "standard output."),
        ],
        [
            "metrics-listen",
            None,
            None,
            ("Also serve /metrics, /healthz and /readyz on this endpoint (for a "
            "proxy run with --no-api; the API listener always serves them)."),
        ],
        [
            "max-token-ttl",
            None,
            MAX_TTL,
            "Longest token lifetime a mint may ask for, in seconds.",
            int,
        ],
        [
            "max-auth-failures",
            None,
            DEFAULT_MAX_FAILURES,
            (
                "Failed console requests per minute per client address before "
                "it gets 429 for a minute (0: no limit)."
            ),
            int,
        ],
        [
            "audit-log",
            None,
            None,
            (
                "Append an audit event per mint, failed check, revocation and "
                "console open/close to this file (JSON lines)."
            ),
        ],
        [
            "node-name",
            None,
            None,
            (
                "This proxy's name in the API's console list. "
                "[default: <hostname>:<proxy port>]"
            ),
        ],
        [
            "revocation-poll-interval",
            None,
            DEFAULT_INTERVAL,
            "Seconds between the proxy's reads of the revocation feed.",
            float,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allowed-origin"] = []
        self["trusted-proxy"] = []
        self["allowed-unix-dir"] = []
        self["allowed-target"] = []

    def opt_allowed_unix_dir(self, directory: str) -> None:
        """Tokens may name VNC unix sockets under this directory (repeatable)."""
        self["allowed-unix-dir"].append(directory)

    def opt_allowed_target(self, rule: str) -> None:
        """
        Allow tokens for this CIDR or host with a port range, e.g.
        10.0.0.0/8:5900-6999 (repeatable; replaces the default).
        """
        self["allowed-target"].append(rule)

    def opt_trusted_proxy(self, network: str) -> None:
        """
        Believe X-Forwarded-For from this address or CIDR network, e.g. a
        load balancer (repeatable).
        """
        try:
            parse_networks([network])
        except ValueError:
            raise usage.UsageError(
                f"--trusted-proxy {network!r}: not an address or CIDR network"
            ) from None
        self["trusted-proxy"].append(network)

    def opt_allowed_origin(self, origin: str) -> None:
        """Also accept WebSockets from this origin or host name (repeatable)."""
        self["allowed-origin"].append(origin)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Read C{--config FILE} first, so that the command line wins.
        """
        argv = list(sys.argv[1:] if options is None else options)
        path = config_path(argv)
        if path is not None:
            apply_config(self, load_config(path), path)
        super().parseOptions(argv)

    def opt_version(self) -> None:
        """Print txvnc's version and exit."""
        print(f"txvnc {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        """
        Check everything that can be checked before start-up, so a mistake
        is a usage message rather than a traceback from makeService.
        """
        run_api, run_proxy = not self["no-api"], not self["no-proxy"]
        if not (run_api or run_proxy):
            raise usage.UsageError("--no-api and --no-proxy leave nothing to run")
        if not run_api and not self["consoleauth-url"]:
            raise usage.UsageError("--no-api needs --consoleauth-url")
        if self["workers"] < 1:
            raise usage.UsageError("--workers must be at least 1")
        if not 0 <= self["poll-spin"] <= MAX_SPIN_US:
            raise usage.UsageError(f"--poll-spin must be 0 to {MAX_SPIN_US:g}")
        if self["workers"] > 1:
            if not run_proxy:
                raise usage.UsageError("--workers needs the proxy (not --no-proxy)")
            parse_tcp_listener(self["listen"])
        for name in (
            "token-check-timeout",
            "connect-timeout",
            "purge-interval",
            "drain-timeout",
            "max-token-ttl",
            "revocation-poll-interval",
        ):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        check_limits(self)
        for name in ("consoleauth-ca", "redis-ca"):
            ca = self[name]
            try:
                load_ca(ca)
            except OSError as e:
                raise usage.UsageError(f"--{name} {ca}: {e.strerror}") from None
            except Exception:
                raise usage.UsageError(
                    f"--{name} {ca}: not a PEM certificate"
                ) from None
        if self["max-auth-failures"] < 0:
            raise usage.UsageError("--max-auth-failures must be 0 or more")
        try:
            parse_networks(self["trusted-proxy"])
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}") from None
        for name in ("listen", "api-listen", "metrics-listen"):
            description = self[name]
            if description and description.startswith("ssl:"):
                try:
                    parts = parse_ssl_description(description)
                    load_options(
                        parts["privateKey"],
                        parts["certKey"],
                        parts.get("extraCertChain"),
                    )
                except TLSConfigError as e:
                    raise usage.UsageError(f"--{name}: {e}") from None
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be text or json")
        try:
            self["target-policy"] = TargetPolicy.parse(self["allowed-target"])
            if run_api:
                kind, path = parse_store_description(self["store"])
                if kind == "sqlite":
                    _check_writable_dir(path, "the token store")
                for name, what in (
                    ("api-key-file", "the API key file"),
                    ("secret-key-file", "the secret key file"),
                ):
                    if os.path.exists(self[name]):
                        read_key_file(self[name])
                    else:
                        _check_writable_dir(self[name], what)
            else:
                read_key_file(self["api-key-file"], PROXY)
            if self["audit-log"] is not None:
                _check_writable_dir(self["audit-log"], "the audit log")
        except (UnknownStore, KeyFileError, PolicyError) as e:
            raise usage.UsageError(str(e)) from None
        if run_proxy:
            self["rfb"] = rfb_config(self)
        if run_api and self["base-url"] is None:
            self["base-url"] = default_base_url(self["listen"], "--base-url")
        if run_proxy:
            if self["consoleauth-url"] is None:
                self["consoleauth-url"] = listener_url(
                    self["api-listen"], "--consoleauth-url"
                )
            if self["web"] is not None:
                if not os.path.isdir(self["web"]):
                    raise usage.UsageError(f"--web {self['web']}: no such directory")
            elif self["novnc"] is not None:
                if not is_novnc(self["novnc"]):
                    raise usage.UsageError(
                        f"--novnc {self['novnc']}: no core/rfb.js there"
                    )
            else:
                self["novnc"] = find_novnc()
                if self["novnc"] is None:
                    raise usage.UsageError(
                        "noVNC not found: run `npm ci` in the txvnc checkout, "
                        "or pass --novnc DIR or --web DIR"
                    )


def rfb_config(config: Options) -> RFBConfig:
    """
    The proxy's RFB settings from the options, the TLS files read now so a
    bad file stops start-up with a usage message.
    """
    security = config["vnc-security"]
    if security is not None and security not in SECURITY_MODES:
        raise usage.UsageError(
            "--vnc-security must be one of: " + ", ".join(SECURITY_MODES)
        )
    if config["vnc-client-key"] and not config["vnc-client-cert"]:
        raise usage.UsageError("--vnc-client-key needs --vnc-client-cert")
    tls = None
    if config["vnc-ca-cert"] or config["vnc-client-cert"]:
        try:
            tls = VNCTLSConfig(
                config["vnc-ca-cert"],
                config["vnc-client-cert"],
                config["vnc-client-key"],
            )
        except Exception as e:
            raise usage.UsageError(f"cannot load the VNC TLS files: {e}") from None
    return RFBConfig(default_security=security, tls=tls)


def _check_writable_dir(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise usage.UsageError(f"{what} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise usage.UsageError(f"{what} {path}: directory {directory} is not writable")


class AuditService(Service):
    """
    Closes the audit log file when the service stops.
    """

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def stopService(self) -> Any:
        super().stopService()
        self.audit.close()


class StoreService(Service):
    """
    Closes the token store when the service stops, after the listeners.
    """

    def __init__(self, store: ITokenStore) -> None:
        self.store = store

    def stopService(self) -> Any:
        super().stopService()
        return self.store.close()


def _listener(
    reactor: Any,
    description: str,
    site: Site,
    hooks: ReloadHooks | None = None,
    what: str = "",
) -> Service:
    endpoint = server_endpoint(reactor, description)
    if hooks is not None and isinstance(endpoint, TLSServerEndpoint):
        hooks.add(f"TLS certificate of {what}", endpoint.tls.reload)
    service = StreamServerEndpointService(endpoint, site)
    # A port that cannot be bound stops start-up with the error, as
    # twistd's own strports services do, instead of running half a service.
    service._raiseSynchronously = True
    return service


def proxy_site(
    config: Any,
    reactor: Any,
    api_key: str | Callable[[], str],
    registry: CollectorRegistry,
    readiness: Readiness,
    audit: AuditLog | None = None,
) -> tuple[Site, ConsoleProxyFactory]:
    """
    The console proxy's site (page, noVNC, WebSockets, health) and its
    factory for C{config}: what one process serves, the twistd process
    itself or each of its workers. The factory's C{follower} (the
    revocation feed, L{RevocationFollower}) is for the caller to start.

    @param api_key: the proxy's key, or a callable answering the current one.
    """
    auth_url = config["consoleauth-url"]
    http = pooled_http_client(reactor, ca_file=config.get("consoleauth-ca"))
    readiness.add("token_api", lambda: http_ok(http, auth_url + "/healthz"))
    auth = ConsoleAuthClient(
        http,
        auth_url,
        api_key,
        reactor,
        timeout=config["token-check-timeout"],
    )
    node = config["node-name"] or node_name(config["listen"])
    factory = ConsoleProxyFactory(
        reactor,
        auth,
        allowed_origins=tuple(config["allowed-origin"]),
        connect_timeout=config["connect-timeout"],
        rfb=config.get("rfb") or rfb_config(config),
        allowed_unix_dirs=tuple(config["allowed-unix-dir"]),
        limits=limits_from(config),
        events=PrometheusConsoleEvents(registry, reactor),
        target_policy=TargetPolicy.parse(config["allowed-target"]),
        guard=AuthFailureGuard(reactor, config["max-auth-failures"]),
        audit=audit if audit is not None else AuditLog(reactor, config["audit-log"]),
        node=node,
        trusted_proxies=parse_networks(config.get("trusted-proxy", [])),
        revocation_interval=config["revocation-poll-interval"],
    )
    registry.register(ProxyCollector(factory))
    site = console_site(
        factory,
        web_dir=config["web"],
        novnc_dir=config["novnc"],
        extra=ops_children(readiness),
        quiet_health=not config.get("access-log-polls"),
    )
    return site, factory


def worker_config(config: Options) -> dict[str, Any]:
    """
    What a worker process is told: the options as plain values (anything
    else was derived from them by L{Options.postOptions} and is derived
    again in the worker), with the API left to this process.
    """
    plain = (str, int, float, bool, type(None), list, tuple)
    told = {k: v for k, v in config.items() if isinstance(v, plain)} | {"no-api": 1}
    # Each worker keeps its own brute-force guard, and the kernel spreads a
    # client's connections over the workers by their source ports, so each
    # takes its share of the limit: together they let about as many
    # failures through as one process would, not N times as many.
    failures = config["max-auth-failures"]
    if failures > 0:
        told["max-auth-failures"] = -(-failures // config["workers"])
    return told


def makeService(config: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    top = LoggedService()
    if config["log-format"] == "json":
        top.log_observer = JSONLineObserver()
    registry = CollectorRegistry()
    readiness = Readiness(reactor)
    hooks = ReloadHooks()
    factory: ConsoleProxyFactory | None = None

    api_key_file = config["api-key-file"]
    if not config["no-api"]:
        load_or_create_key_file(api_key_file)
    keys = KeyRing.from_file(api_key_file)
    hooks.add("API keys", keys.reload)
    policy = config.get("target-policy") or TargetPolicy.parse(
        config.get("allowed-target", [])
    )
    audit = AuditLog(reactor, config["audit-log"])
    AuditService(audit).setServiceParent(top)

    if not config["no-api"]:
        store = store_from_string(config["store"], redis_ca=config.get("redis-ca"))
        StoreService(store).setServiceParent(top)
        base_url = config["base-url"]
        secrets = SecretBox(load_or_create_key_file(config["secret-key-file"]))
        api = ConsoleAuthResource(
            store,
            keys,
            reactor,
            base_url,
            secrets=secrets,
            allowed_unix_dirs=tuple(config["allowed-unix-dir"]),
            policy=policy,
            max_ttl=config["max-token-ttl"],
            audit=audit,
        )
        api.trusted_proxies = parse_networks(config.get("trusted-proxy", []))
        readiness.add("store", lambda: store.get(NO_SUCH_TOKEN, reactor.seconds()))
        # A mint takes 64 KiB at most; only a proxy's console report more.
        api_site = GuardedSite(
            WithOps(api, ops_children(readiness, MetricsResource(registry))),
            timeout=60,
            logFormatter=access_log_formatter_for(
                parse_networks(config.get("trusted-proxy", []))
            ),
            max_body=MAX_BODY,
            larger_bodies={b"/v1/proxies/": MAX_REPORT_BODY},
            # Every proxy polls the revocation feed each second and reports
            # its consoles every 10 s; scrapers and load balancers poll too.
            quiet_paths=()
            if config["access-log-polls"]
            else (*HEALTH_PATHS, *API_POLLED_PATHS),
            header_timeout=config["handshake-timeout"],
            reactor=reactor,
        )
        api_site.displayTracebacks = False
        _listener(
            reactor, config["api-listen"], api_site, hooks, "--api-listen"
        ).setServiceParent(top)
        purge = TimerService(
            config["purge-interval"], lambda: store.purge(reactor.seconds())
        )
        purge.clock = reactor
        purge.setServiceParent(top)
        _log.info(
            "token API on {listen}, store {store}, key file {key_file}, "
            "access URLs under {base_url}, targets allowed: {policy}",
            listen=config["api-listen"],
            store=redact_store_description(config["store"]),
            key_file=api_key_file,
            base_url=base_url,
            policy=str(policy),
        )

    if not config["no-proxy"]:
        if config["workers"] > 1:
            socks = shared_listening_sockets(config["listen"], config["workers"])
            # The workers' metrics, summed into this process's /metrics.
            shared = WorkerMetricsDirectory.create()
            registry.register(shared.collector())
            pool = WorkerPool(reactor, socks, worker_config(config), metrics=shared)
            pool.setServiceParent(top)
            hooks.add("the workers (SIGHUP passed on)", pool.reload)
        else:
            SpinService(reactor, config["poll-spin"]).setServiceParent(top)
            site, factory = proxy_site(
                config,
                reactor,
                lambda: keys.key_for(PROXY),
                registry,
                readiness,
                audit,
            )
            assert factory.follower is not None
            factory.follower.setServiceParent(top)
            _listener(
                reactor, config["listen"], site, hooks, "--listen"
            ).setServiceParent(top)
        _log.info(
            "console proxy on {listen} ({workers} process(es)), checking tokens "
            "at {auth_url}, serving {web}",
            listen=config["listen"],
            workers=config["workers"],
            auth_url=config["consoleauth-url"],
            web=config["web"] or f"txvnc's page with noVNC from {config['novnc']}",
        )
    if config["metrics-listen"]:
        metrics_root = Resource()
        for name, child in ops_children(readiness, MetricsResource(registry)).items():
            metrics_root.putChild(name, child)
        metrics_site = GuardedSite(
            metrics_root,
            timeout=60,
            header_timeout=config["handshake-timeout"],
            quiet_paths=()
            if config["access-log-polls"]
            else (*HEALTH_PATHS, b"/metrics"),
        )
        _listener(
            reactor, config["metrics-listen"], metrics_site, hooks, "--metrics-listen"
        ).setServiceParent(top)
    DrainService(reactor, factory, readiness, config["drain-timeout"]).setServiceParent(
        top
    )
    SignalService(reactor, hooks).setServiceParent(top)
    return top
