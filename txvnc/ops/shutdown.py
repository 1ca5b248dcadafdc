"""
Graceful shutdown and the process's signals.

On SIGTERM the service stops accepting (listeners close, C{/readyz}
answers 503), tells every open console it is going away (close code 1001,
"Service restarting"), waits up to C{drain_timeout} seconds for them to
close, drops the rest, and lets twistd exit with status 0: a requested
stop is a clean exit, not a death by signal. SIGHUP runs the reload hooks.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from txvnc.ops.health import Readiness
from txvnc.ops.reload import ReloadHooks
from txvnc.proxy import closecodes
from txvnc.proxy.websocket import ConsoleProxyFactory


class DrainService(Service):
    """
    Drains the proxy's consoles when the service stops.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        factory: ConsoleProxyFactory | None,
        readiness: Readiness,
        drain_timeout: float,
    ) -> None:
        self._reactor = reactor
        self._factory = factory
        self._readiness = readiness
        self.drain_timeout = drain_timeout

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._readiness.draining = True
        factory = self._factory
        if factory is None:
            return None
        factory.draining = True
        consoles = list(factory.consoles)
        if not consoles:
            return None
        self._log.info(
            "shutting down: closing {count} console(s), waiting up to "
            "{timeout:g}s (--drain-timeout)",
            count=len(consoles),
            timeout=self.drain_timeout,
        )
        for console in consoles:
            console.close_why = "service shutting down"
            console.close_console(
                closecodes.GOING_AWAY, closecodes.REASONS[closecodes.GOING_AWAY]
            )
        closed = factory.when_idle()
        done: Deferred[None] = Deferred()
        timer = self._reactor.callLater(self.drain_timeout, self._give_up, done)

        def all_closed(_: object) -> None:
            if timer.active():
                timer.cancel()
                self._log.info("shutting down: every console closed")
                done.callback(None)

        closed.addCallback(all_closed)
        return done

    def _give_up(self, done: Deferred[None]) -> None:
        assert self._factory is not None
        left = list(self._factory.consoles)
        self._log.warn(
            "shutting down: {count} console(s) still open after {timeout:g}s; "
            "dropping them",
            count=len(left),
            timeout=self.drain_timeout,
        )
        for console in left:
            transport: Any = console.transport
            if transport is not None:
                transport.abortConnection()
        done.callback(None)


class SignalService(Service):
    """
    Installs txvnc's SIGTERM and SIGHUP handlers once the reactor runs
    (twistd installs its own just before, and ours replace them).
    """

    _log = Logger()

    def __init__(self, reactor: Any, hooks: ReloadHooks) -> None:
        self._reactor = reactor
        self._hooks = hooks

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        self._log.info(
            "signals: SIGTERM shuts down gracefully, SIGHUP reloads {what}",
            what=", ".join(self._hooks.names()) or "nothing",
        )

    def _on_term(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._stop)

    def _stop(self) -> None:
        self._log.info("SIGTERM: shutting down gracefully")
        if self._reactor.running:
            self._reactor.stop()

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._reload)

    def _reload(self) -> None:
        self._log.info(
            "SIGHUP: reloading {what}",
            what=", ".join(self._hooks.names()) or "nothing",
        )
        self._hooks.run()
