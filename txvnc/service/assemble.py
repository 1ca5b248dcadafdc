"""
C{twistd txvnc}'s service, assembled from its L{Settings}: the token API,
the console proxy (in this process or a pool of workers), the operator's
listener, the drain at shutdown and the signal handlers, under one
L{MultiService} that logs as C{--log-format} says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any, cast

from prometheus_client import CollectorRegistry
from twisted.application.service import IService, MultiService, Service
from twisted.logger import Logger, textFileLogObserver

from txvnc.consoleauth.keys import KeyRing, load_or_create_key_file
from txvnc.core.audit import AuditLog
from txvnc.ops.health import Readiness
from txvnc.ops.logs import JSONLineObserver, LoggedService
from txvnc.ops.metrics import add_process_metrics
from txvnc.ops.reload import ReloadHooks
from txvnc.ops.sharedlog import RotateOnSignal, SharedLogFile
from txvnc.ops.sharedmetrics import WorkerMetricsDirectory
from txvnc.ops.shutdown import DrainService, SignalService
from txvnc.proxy.websocket import ConsoleProxyFactory
from txvnc.service.api import token_api
from txvnc.service.listeners import (
    StartupError,
    cannot_listen_why,
    metrics_listener,
)
from txvnc.service.proxy import console_proxy, token_api_check
from txvnc.service.settings import Settings
from txvnc.service.workerlog import FILE, WorkerLog
from txvnc.service.workers import (
    WorkerPool,
    shared_listening_sockets,
    worker_config,
)

_log = Logger()


class AuditService(Service):
    """
    Closes the audit log file when the service stops.
    """

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def stopService(self) -> Any:
        super().stopService()
        self.audit.close()


def build(
    settings: Settings, reactor: Any, twistd: Mapping[str, Any] | None = None
) -> MultiService:
    """
    Every service of one C{twistd txvnc}, in the order they start (and the
    reverse of the order they stop: listeners before the store and the
    audit log, the drain before the listeners).

    @param twistd: twistd's own options (C{--logfile}, C{-n}...), which say
        where C{--workers} write their log.
    """
    top = LoggedService()
    if settings.log_format == "json":
        top.log_observer = JSONLineObserver()
    registry = CollectorRegistry()
    readiness = Readiness(reactor)
    hooks = ReloadHooks()
    factory: ConsoleProxyFactory | None = None
    pool: WorkerPool | None = None

    if settings.run_api:
        load_or_create_key_file(settings.api_key_file)
    keys = KeyRing.from_file(settings.api_key_file, private=True)
    hooks.add("API keys", keys.reload)
    audit = AuditLog(reactor, settings.audit_log)
    services: list[IService] = [AuditService(audit)]
    if settings.nova_config is not None:
        _log.info(
            "serving nova's consoles as {path} says", path=settings.nova_config
        )
        for note in settings.nova_ignored:
            _log.warn("nova.conf option not honoured: {note}", note=note)
    if settings.run_api:
        services += token_api(
            settings, reactor, keys, registry, readiness, hooks, audit
        )
    if settings.run_proxy:
        if settings.workers > 1:
            log = WorkerLog.for_twistd(twistd, settings.log_format)
            logfile = None
            if log.to == FILE:
                assert log.path is not None
                # This process writes to the workers' file the same way
                # (twistd's own log file cannot be shared).
                logfile = SharedLogFile(log.path)
                top.log_observer = textFileLogObserver(cast(IO[Any], logfile))
                services.append(RotateOnSignal(reactor, logfile))
            pool = _worker_pool(settings, reactor, registry, hooks, log, logfile)
            services.append(pool)
            token_api_check(settings, reactor, readiness)
        else:
            proxy, factory = console_proxy(
                settings, reactor, keys, registry, readiness, hooks, audit
            )
            services += proxy
        _log.info(
            "console proxy on {listen} ({workers} process(es)), checking tokens "
            "at {auth_url}, serving {web}",
            listen=settings.listen,
            workers=settings.workers,
            auth_url=settings.consoleauth_url,
            web=settings.web or f"txvnc's page with noVNC from {settings.novnc}",
        )
    add_process_metrics(registry, pool.pids_by_number if pool else None)
    if settings.metrics_listen:
        services.append(
            metrics_listener(
                reactor,
                settings.metrics_listen,
                registry,
                readiness,
                hooks,
                settings.limits.handshake_timeout,
                settings.access_log_polls,
            )
        )
    services.append(DrainService(reactor, factory, readiness, settings.drain_timeout))
    services.append(SignalService(reactor, hooks))
    for service in services:
        service.setServiceParent(top)
    return top


def _worker_pool(
    settings: Settings,
    reactor: Any,
    registry: CollectorRegistry,
    hooks: ReloadHooks,
    log: WorkerLog,
    logfile: SharedLogFile | None,
) -> WorkerPool:
    """
    C{--workers N}: the pool on N shared sockets, the workers' metrics
    summed into this process's C{/metrics}, SIGHUP passed on.
    """
    try:
        socks = shared_listening_sockets(settings.listen, settings.workers)
    except OSError as e:
        # Made while the service is built, before twistd's log has begun:
        # the error alone says it (a critical line now would go to stderr
        # as well).
        why = f"--listen {settings.listen}: cannot listen: {cannot_listen_why(e)}"
        raise StartupError(why) from None
    shared = WorkerMetricsDirectory.create()
    registry.register(shared.collector())
    pool = WorkerPool(
        reactor,
        socks,
        worker_config(settings),
        metrics=shared,
        log=log,
        logfile=logfile,
    )
    hooks.add("the workers (SIGHUP passed on)", pool.reload)
    return pool
