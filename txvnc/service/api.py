"""
The token API of one C{twistd txvnc}: its store, the resource over it, the
listener, and the purge of expired tokens.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from txvnc.consoleauth.keys import (
    SECRET_KEY_FILE,
    KeyRing,
    load_or_create_key_file,
)
from txvnc.consoleauth.nova import NovaTokenStore
from txvnc.consoleauth.recordings import RecordingArchive, ReplayLinks
from txvnc.consoleauth.resource import (
    MAX_BODY,
    MAX_REPORT_BODY,
    ConsoleAuthResource,
)
from txvnc.consoleauth.secretbox import SecretBox
from txvnc.consoleauth.store import ITokenStore
from txvnc.consoleauth.stores import redact_store_description, store_from_string
from txvnc.core.accesslog import access_log_formatter_for
from txvnc.core.audit import AuditLog
from txvnc.core.guarded import GuardedSite
from txvnc.ops.health import HEALTH_PATHS, Readiness, WithOps, ops_children
from txvnc.ops.metrics import MetricsResource
from txvnc.ops.reload import ReloadHooks
from txvnc.ops.timers import timer_service
from txvnc.service.listeners import listener
from txvnc.service.settings import Settings

_log = Logger()

#: A token hash no token has: what the readiness check looks up.
NO_SUCH_TOKEN = "0" * 64

#: Token API paths that machines ask all the time, kept out of the access
#: log when they succeed (see GuardedSite's quiet_paths).
API_POLLED_PATHS = (b"/metrics", b"/v1/revocations", b"/v1/proxies/")


class StoreService(Service):
    """
    Closes the token store when the service stops, after the listeners.
    """

    def __init__(self, store: ITokenStore) -> None:
        self.store = store

    def stopService(self) -> Any:
        super().stopService()
        return self.store.close()


def nova_watch(reactor: Any, store: NovaTokenStore, interval: float) -> IService:
    """
    The look at nova's database for deleted tokens and instances, as often
    as proxies read the revocation feed, so nova's revocations reach open
    consoles within two intervals.
    """
    return timer_service(
        reactor,
        interval,
        lambda: Deferred.fromCoroutine(store.watch(reactor.seconds())),
        "watching nova's tokens failed",
    )


def token_api(
    settings: Settings,
    reactor: Any,
    keys: KeyRing,
    registry: CollectorRegistry,
    readiness: Readiness,
    hooks: ReloadHooks,
    audit: AuditLog,
) -> list[IService]:
    """
    The token API's services, in the order they start (the store first, so
    it closes last): the store, the API's listener, the purge timer.

    @param keys: the API keys, shared with the proxy in this process.
    @param registry: the process's metrics, served at C{/metrics}.
    """
    policy = settings.target_policy
    # A nova database query gives up before the proxy's token check does,
    # so the proxy gets the API's 503 rather than its own time-out.
    store = store_from_string(
        settings.store,
        redis_ca=settings.redis_ca,
        reactor=reactor,
        timeout=max(0.1, settings.token_check_timeout * 0.8),
    )
    services: list[IService] = [StoreService(store)]
    base_url = settings.base_url
    assert base_url is not None  # Settings fills it in when the API runs
    secrets = SecretBox(
        load_or_create_key_file(settings.secret_key_file, what=SECRET_KEY_FILE)
    )
    archive = None
    if settings.record_dir is not None:
        archive = RecordingArchive(
            settings.record_dir,
            ReplayLinks.from_secrets(secrets),
            settings.replay_ttl,
            reactor,
        )
    api = ConsoleAuthResource(
        store,
        keys,
        reactor,
        base_url,
        secrets=secrets,
        allowed_unix_dirs=settings.allowed_unix_dirs,
        policy=policy,
        max_ttl=settings.max_token_ttl,
        audit=audit,
        trusted_proxies=settings.trusted_proxies,
        recordings=archive,
    )
    readiness.add("store", lambda: store.get(NO_SUCH_TOKEN, reactor.seconds()))
    # A mint takes 64 KiB at most; only a proxy's console report more.
    api_site = GuardedSite(
        WithOps(api, ops_children(readiness, MetricsResource(registry))),
        timeout=60,
        logFormatter=access_log_formatter_for(settings.trusted_proxies),
        max_body=MAX_BODY,
        larger_bodies={b"/v1/proxies/": MAX_REPORT_BODY},
        # Every proxy polls the revocation feed each second and reports
        # its consoles every 10 s; scrapers and load balancers poll too.
        quiet_paths=()
        if settings.access_log_polls
        else (*HEALTH_PATHS, *API_POLLED_PATHS),
        header_timeout=settings.limits.handshake_timeout,
        reactor=reactor,
    )
    api_site.displayTracebacks = False
    services.append(
        listener(reactor, settings.api_listen, api_site, hooks, "--api-listen")
    )
    services.append(
        timer_service(
            reactor,
            settings.purge_interval,
            lambda: store.purge(reactor.seconds()),
            "purging expired tokens failed",
        )
    )
    if isinstance(store, NovaTokenStore):
        services.append(nova_watch(reactor, store, settings.revocation_poll_interval))
    if archive is not None and settings.record_retention > 0:
        services.append(retention_timer(reactor, archive, settings.record_retention))
    _log.info(
        "token API on {listen}, store {store}, key file {key_file}, "
        "access URLs under {base_url}, targets allowed: {policy}",
        listen=settings.api_listen,
        store=redact_store_description(settings.store),
        key_file=settings.api_key_file,
        base_url=base_url,
        policy=str(policy),
    )
    return services


#: Seconds between looks for recordings past --record-retention.
RETENTION_INTERVAL = 3600.0


def retention_timer(
    reactor: Any, archive: RecordingArchive, days: float
) -> IService:
    """
    Every hour (and at start), delete the recordings last written more than
    C{days} ago, in a thread; a failure is logged and the next hour tries
    again (L{txvnc.ops.timers}).
    """

    async def purge() -> None:
        before = reactor.seconds() - days * 86400
        gone = await archive.run(archive.directory.purge, before)
        if gone:
            _log.info(
                "deleted {count} recording(s) older than {days:g} days "
                "(--record-retention)",
                count=len(gone),
                days=days,
            )

    return timer_service(
        reactor,
        RETENTION_INTERVAL,
        lambda: Deferred.fromCoroutine(purge()),
        "deleting old recordings failed",
    )
