"""
C{python -m txvnc.service.worker}: one proxy process of C{twistd txvnc --workers N}.

Started by L{txvnc.service.workers.WorkerPool}, never by hand: it reads its
configuration (the twistd options, its number and where to log) as one
JSON line on stdin, serves the console page and WebSockets on the
listening socket it inherits as file descriptor 3, writes its own log
lines where twistd writes its own (L{txvnc.service.workerlog}), and stops
when told to (SIGTERM, after draining its consoles) or when its supervisor
is gone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.logger import Logger, globalLogBeginner
from twisted.python import usage

from txvnc.consoleauth.keys import PROXY, KeyRing
from txvnc.ops.dispatch import install as install_dispatch
from txvnc.ops.health import Readiness
from txvnc.ops.loop import install as install_loop
from txvnc.ops.reload import ReloadHooks
from txvnc.ops.sharedmetrics import ENV, ProxyMetricsPublisher
from txvnc.ops.shutdown import DrainService, SignalService
from txvnc.ops.spin import install as install_spin
from txvnc.ops.timers import looping
from txvnc.service.proxy import proxy_site
from txvnc.service.settings import Settings
from txvnc.service.workerlog import WorkerLog
from txvnc.service.workers import LISTEN_FD

_log = Logger()


def run(settings: Settings, reactor: Any) -> None:
    """
    Serve the proxy on the inherited socket until the reactor stops.
    """
    readiness = Readiness(reactor)
    # Each worker reports its own consoles to the token API, so each needs
    # its own name there.
    settings = dataclasses.replace(
        settings, node_name=f"{settings.node_name}/{os.getpid()}"
    )
    # The key is looked up per call, so a SIGHUP (passed on by the
    # supervisor) rotates it without touching open consoles.
    keys = KeyRing.from_file(settings.api_key_file, private=True)
    keys.key_for(PROXY)
    hooks = ReloadHooks()
    hooks.add("API keys", keys.reload)
    # Called when the reactor starts, before run() enters its loop.
    install_loop(reactor)
    install_dispatch(reactor)
    install_spin(reactor, settings.poll_spin)
    site, factory = proxy_site(
        settings,
        reactor,
        lambda: keys.key_for(PROXY),
        CollectorRegistry(),
        readiness,
    )
    if os.environ.get(ENV):
        # This process's metrics go to files the supervisor sums.
        publisher = ProxyMetricsPublisher(factory)
        publisher.start(reactor)
        # "during": after the drain ("before") has closed the consoles.
        reactor.addSystemEventTrigger("during", "shutdown", publisher.stop)
    if factory.follower is not None:
        factory.follower.startService()
        reactor.addSystemEventTrigger(
            "before", "shutdown", factory.follower.stopService
        )
    # SIGTERM from the supervisor drains this worker's consoles (close
    # 1001, then --drain-timeout) before the reactor stops.
    drain = DrainService(reactor, factory, readiness, settings.drain_timeout)
    drain.startService()
    reactor.addSystemEventTrigger("before", "shutdown", drain.stopService)
    # SIGTERM stops the reactor (and so drains, above); SIGHUP reloads.
    SignalService(reactor, hooks).startService()
    family = socket.AF_INET6 if settings.listen.startswith("tcp6") else socket.AF_INET
    port = reactor.adoptStreamPort(LISTEN_FD, family, site)
    os.close(LISTEN_FD)  # the port holds its own duplicate
    parent = os.getppid()

    def orphaned() -> None:
        if os.getppid() != parent:
            _log.warn("supervisor {pid} is gone; stopping", pid=parent)
            reactor.stop()

    looping(reactor, orphaned, "parent check failed", _log).start(1.0, now=False)
    _log.info(
        "console proxy worker {pid} serving {address}",
        pid=os.getpid(),
        address=port.getHost(),
    )


def main() -> None:
    told: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    try:
        settings = Settings.from_options(told["options"])
    except usage.UsageError as e:
        # The supervisor logs a worker's stderr and starts it again.
        sys.stderr.write(f"txvnc worker: {e}\n")
        raise SystemExit(2) from None
    log = WorkerLog.from_json(told["log"])
    globalLogBeginner.beginLoggingTo(
        [log.observer(told["number"])], redirectStandardIO=False
    )
    # SIGUSR1 rotates the log in the twistd process; sent to the whole
    # process group, it must neither end a worker nor rotate again.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    from twisted.internet import reactor

    reactor.callWhenRunning(run, settings, reactor)
    reactor.run()


if __name__ == "__main__":
    main()
