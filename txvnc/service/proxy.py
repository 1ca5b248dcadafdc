"""
The console proxy of one process: the twistd process itself (C{--workers
1}) or each of its workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import IService
from twisted.logger import Logger
from twisted.web.server import Site

from txvnc.client import ConsoleAuthClient
from txvnc.consoleauth.keys import PROXY, KeyRing
from txvnc.core.audit import AuditLog
from txvnc.httppool import API_CONNECTIONS, pooled_http_client
from txvnc.ops.dispatch import DispatchService
from txvnc.ops.health import Readiness, http_ok, ops_children
from txvnc.ops.loop import LoopService
from txvnc.ops.metrics import PrometheusConsoleEvents, ProxyCollector
from txvnc.ops.reload import ReloadHooks
from txvnc.ops.spin import SpinService
from txvnc.proxy.capacity import open_files_limit
from txvnc.proxy.guard import AuthFailureGuard
from txvnc.proxy.recorder import Recordings
from txvnc.proxy.replay import ReplayResource
from txvnc.proxy.site import console_site
from txvnc.proxy.websocket import ConsoleProxyFactory
from txvnc.service.listeners import listener
from txvnc.service.settings import Settings

_log = Logger()


def token_api_check(settings: Settings, reactor: Any, readiness: Readiness) -> Any:
    """
    Add the C{token_api} readiness check (the token API's C{/healthz}
    answers 200) and return the HTTP client it uses. Each proxy process
    has it, and so does the parent of C{--workers}, whose C{--metrics-listen}
    is where an operator reads why a node is not ready.
    """
    auth_url = settings.consoleauth_url
    assert auth_url is not None  # Settings fills it in for every proxy
    http = pooled_http_client(reactor, ca_file=settings.consoleauth_ca)
    readiness.add("token_api", lambda: http_ok(http, auth_url + "/healthz"))
    return http


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
    revocation feed) is for the caller to start.

    @param api_key: the proxy's key, or a callable answering the current one.
    @param audit: the process's audit log; one of its own when L{None}.
    """
    auth_url = settings.consoleauth_url
    assert auth_url is not None  # Settings fills it in for every proxy
    http = token_api_check(settings, reactor, readiness)
    auth = ConsoleAuthClient(
        http,
        auth_url,
        api_key,
        reactor,
        timeout=settings.token_check_timeout,
        max_in_flight=API_CONNECTIONS,
    )
    node = settings.node_name
    recordings = None
    if settings.record_dir is not None:
        recordings = Recordings(
            reactor,
            settings.record_dir,
            node,
            record_all=settings.record_all,
            on_failure=settings.record_on_failure,
        )
        # "during": after the drain ("before") has closed the consoles,
        # whose recordings are then written to their end.
        reactor.addSystemEventTrigger("during", "shutdown", recordings.stop)
    factory = ConsoleProxyFactory(
        reactor,
        auth,
        allowed_origins=settings.allowed_origins,
        connect_timeout=settings.connect_timeout,
        rfb=settings.rfb,
        allowed_unix_dirs=settings.allowed_unix_dirs,
        limits=settings.limits,
        events=PrometheusConsoleEvents(registry, reactor),
        target_policy=settings.target_policy,
        guard=AuthFailureGuard(reactor, settings.max_auth_failures),
        audit=audit if audit is not None else AuditLog(reactor, settings.audit_log),
        node=node,
        trusted_proxies=settings.trusted_proxies,
        revocation_interval=settings.revocation_poll_interval,
        recordings=recordings,
    )
    registry.register(ProxyCollector(factory))
    limits = settings.limits
    open_files = open_files_limit()
    _log.info(
        "proxy: at most {consoles} consoles (open-files limit {open_files}), "
        "{pending} connections without a console per client address",
        consoles=limits.max_connections or "unlimited",
        open_files=open_files if open_files is not None else "unlimited",
        pending=limits.max_pending_per_address or "unlimited",
    )
    site = console_site(
        factory,
        web_dir=settings.web,
        novnc_dir=settings.novnc,
        # Anyone may ask the public listener: the status, not the reasons.
        extra=ops_children(readiness, public=True),
        replay=ReplayResource(auth, settings.record_dir, reactor),
        quiet_health=not settings.access_log_polls,
        frame_ancestors=settings.frame_ancestors,
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
    The proxy served by this process (C{--workers 1}): the reactor's lean
    loop, relay dispatch and spin, the revocation follower and the
    listener, in the order they start, and the factory (for the drain at
    shutdown).

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
        LoopService(reactor),
        DispatchService(reactor),
        SpinService(reactor, settings.poll_spin),
        factory.follower,
        listener(reactor, settings.listen, site, hooks, "--listen"),
    ]
    return services, factory
