"""
The console proxy of one process: the twistd process itself (C{--workers
1}) or each of its workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import IService
from twisted.web.server import Site

from txvnc.client import ConsoleAuthClient, pooled_http_client
from txvnc.consoleauth.keys import PROXY, KeyRing
from txvnc.core.audit import AuditLog
from txvnc.core.forwarded import parse_networks
from txvnc.core.targets import TargetPolicy
from txvnc.ops.health import Readiness, http_ok, ops_children
from txvnc.ops.metrics import PrometheusConsoleEvents, ProxyCollector
from txvnc.ops.reload import ReloadHooks
from txvnc.ops.spin import SpinService
from txvnc.proxy.guard import AuthFailureGuard
from txvnc.proxy.options import limits_from
from txvnc.proxy.relay import ConsoleProxyFactory
from txvnc.proxy.revocation import RevocationFollower
from txvnc.proxy.site import console_site
from txvnc.service.listeners import listener
from txvnc.service.settings import Settings, rfb_config


def proxy_site(
    settings: Settings,
    reactor: Any,
    api_key: str | Callable[[], str],
    registry: CollectorRegistry,
    readiness: Readiness,
    audit: AuditLog | None = None,
) -> tuple[Site, ConsoleProxyFactory]:
    """
    The console proxy's site (page, noVNC, WebSockets, health) and its
    factory: what one process serves. The factory's C{follower} (the
    revocation feed, L{RevocationFollower}) is for the caller to start.

    @param api_key: the proxy's key, or a callable answering the current one.
    @param audit: the process's audit log; one of its own when L{None}.
    """
    # The factory's lines read the options by name until the factory takes
    # typed settings (kept as they were in txvnc.tap for the merge).
    config = settings.options
    auth_url = settings.consoleauth_url
    assert auth_url is not None  # Settings fills it in for every proxy
    http = pooled_http_client(reactor, ca_file=settings.consoleauth_ca)
    readiness.add("token_api", lambda: http_ok(http, auth_url + "/healthz"))
    auth = ConsoleAuthClient(
        http,
        auth_url,
        api_key,
        reactor,
        timeout=settings.token_check_timeout,
    )
    node = settings.node_name
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
    )
    factory.follower = RevocationFollower(
        reactor,
        auth,
        factory.consoles,
        node,
        interval=config["revocation-poll-interval"],
    )
    factory.trusted_proxies = parse_networks(config.get("trusted-proxy", []))
    registry.register(ProxyCollector(factory))
    site = console_site(
        factory,
        web_dir=settings.web,
        novnc_dir=settings.novnc,
        extra=ops_children(readiness),
        quiet_health=not settings.access_log_polls,
    )
    return site, factory


def console_proxy(
    settings: Settings,
    reactor: Any,
    keys: KeyRing,
    registry: CollectorRegistry,
    readiness: Readiness,
    hooks: ReloadHooks,
    audit: AuditLog,
) -> tuple[list[IService], ConsoleProxyFactory]:
    """
    The proxy served by this process (C{--workers 1}): the reactor's spin,
    the revocation follower and the listener, in the order they start, and
    the factory (for the drain at shutdown).

    @param keys: the API keys; the proxy's is looked up per call, so a
        SIGHUP rotates it without touching open consoles.
    """
    site, factory = proxy_site(
        settings,
        reactor,
        lambda: keys.key_for(PROXY),
        registry,
        readiness,
        audit,
    )
    assert factory.follower is not None
    services: list[IService] = [
        SpinService(reactor, settings.poll_spin),
        factory.follower,
        listener(reactor, settings.listen, site, hooks, "--listen"),
    ]
    return services, factory
