"""
Listeners: an endpoint description and a site in, a service out.

Every listener of C{twistd txvnc} (the proxy's, the token API's,
C{--metrics-listen}) is built here, so each stops start-up when its port
cannot be bound and each C{ssl:} one reloads its certificate on SIGHUP.

A failure to start is said in one line, where twistd would print a usage
error after its whole help text and a port in use as a traceback of some
forty lines through its log: a L{StartupError} carries the option, the value
and what is wrong, and L{report_in_one_line} makes an uncaught one end the
process with that line on stderr and exit status 1 (twistd, daemonizing,
hands its message to the parent as for any exception).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO

from prometheus_client import CollectorRegistry
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from txvnc.core.guarded import GuardedSite
from txvnc.ops.health import HEALTH_PATHS, Readiness, ops_children
from txvnc.ops.metrics import MetricsResource
from txvnc.ops.reload import ReloadHooks
from txvnc.service.tls import TLSServerEndpoint, server_endpoint


class StartupError(Exception):
    """
    txvnc cannot start as configured; the message names the option and its
    value and says what is wrong.
    """


def say(message: str, stream: TextIO | None = None) -> None:
    """
    Write C{twistd txvnc: MESSAGE} to the process's own stderr (twistd
    sends C{sys.stderr} to its log once logging starts).
    """
    out = stream or sys.__stderr__
    if out is not None:
        out.write(f"twistd txvnc: {message}\n")
        out.flush()


def report_in_one_line() -> None:
    """
    From now on, a L{StartupError} nobody catches is one line on stderr,
    not a traceback; any other exception is reported as before.
    """
    previous = sys.excepthook

    def hook(
        kind: type[BaseException],
        value: BaseException,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(value, StartupError):
            say(str(value))
        else:
            previous(kind, value, traceback)

    sys.excepthook = hook


def listener(
    reactor: Any,
    description: str,
    site: Site,
    hooks: ReloadHooks | None = None,
    what: str = "",
) -> Service:
    """
    A service listening on C{description} with C{site}; an C{ssl:}
    listener's certificate reload is added to C{hooks} as C{what}'s.
    """
    endpoint = server_endpoint(reactor, description)
    if hooks is not None and isinstance(endpoint, TLSServerEndpoint):
        hooks.add(f"TLS certificate of {what}", endpoint.tls.reload)
    return ListenerService(endpoint, site, f"{what} {description}".strip())


class ListenerService(StreamServerEndpointService):
    """
    A listener whose port cannot be bound stops start-up, as twistd's own
    strports services do, instead of running half a service; the error
    names the option and the description (C{--listen tcp:6080: cannot
    listen: address already in use}), logged and raised as a
    L{StartupError}.
    """

    _log = Logger()

    def __init__(self, endpoint: Any, factory: Any, named: str) -> None:
        super().__init__(endpoint, factory)
        self._named = named
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            why = f"{self._named}: cannot listen: {cannot_listen_why(e)}"
            self._log.critical("{why}", why=why)
            raise StartupError(why) from None


def cannot_listen_why(error: Exception) -> str:
    """
    What the system said, without Twisted's wrapping (C{Couldn't listen on
    127.0.0.1:6080: [Errno 98] Address already in use.} becomes C{Address
    already in use}).
    """
    cause = getattr(error, "socketError", error)
    return str(getattr(cause, "strerror", None) or cause)


def metrics_listener(
    reactor: Any,
    description: str,
    registry: CollectorRegistry,
    readiness: Readiness,
    hooks: ReloadHooks,
    header_timeout: float,
    access_log_polls: bool,
) -> Service:
    """
    C{--metrics-listen}: C{/metrics}, C{/healthz} and C{/readyz} alone, for
    a proxy that has no token API listener to serve them.
    """
    metrics_root = Resource()
    for name, child in ops_children(readiness, MetricsResource(registry)).items():
        metrics_root.putChild(name, child)
    metrics_site = GuardedSite(
        metrics_root,
        timeout=60,
        header_timeout=header_timeout,
        quiet_paths=() if access_log_polls else (*HEALTH_PATHS, b"/metrics"),
    )
    return listener(reactor, description, metrics_site, hooks, "--metrics-listen")
