"""
C{--workers N}: N proxy processes accepting from one listening socket.

The twistd process binds the proxy's port N times with C{SO_REUSEPORT} and
hands socket I to worker process I (C{python -m txvnc.service.worker}) as its file
descriptor 3. The kernel spreads new connections evenly over the sockets
(by a hash of their addresses), so each worker gets its share; with one
socket shared by all, whichever worker woke first would accept a whole
burst and the consoles on the busier worker would run slower. The token API
stays in the twistd process. A worker that dies is started again (after a
short pause if it keeps dying) on the same socket: the consoles it held are
gone, everyone else's stay open, and connections waiting in its backlog
meanwhile are not lost, because the twistd process keeps the socket open.

Each worker gets its configuration as one JSON line on stdin and writes
its own log lines where twistd writes this process's (standard output or
the log file; L{txvnc.service.workerlog}), named C{txvnc-worker-N}, so
one log shows the whole service. Only with C{--syslog} or C{--logger} does
a worker send its events to this process as JSON lines on its stdout, to
be logged here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

from txvnc.ops.sharedlog import SharedLogFile
from txvnc.ops.sharedmetrics import WorkerMetricsDirectory
from txvnc.service.endpoints import parse_tcp_listener
from txvnc.service.settings import Settings
from txvnc.service.workerlog import LOG_FD, WorkerLog, worker_system

#: The listening socket's descriptor number in every worker.
LISTEN_FD = 3

#: Seconds to wait before restarting a worker that died young.
RESTART_DELAY = 1.0

#: A worker that lived longer than this is restarted at once.
HEALTHY_AFTER = 10.0

#: Seconds a stopping worker gets beyond its --drain-timeout before it is
#: killed.
STOP_GRACE = 5.0


def shared_listening_sockets(description: str, count: int) -> list[socket.socket]:
    """
    C{count} bound, listening, non-blocking, inheritable sockets on the
    same address and port (the first one's, when the description says port
    0), for a tcp listener description.
    """
    family, interface, port, backlog = parse_tcp_listener(description)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.setblocking(False)
            sock.set_inheritable(True)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def worker_config(settings: Settings) -> dict[str, Any]:
    """
    What a worker process is told: the options as plain values (anything
    else was derived from them by L{Settings.from_options} and is derived
    again in the worker), with the API left to this process.
    """
    plain = (str, int, float, bool, type(None), list, tuple)
    told = {
        k: v for k, v in settings.options.items() if isinstance(v, plain)
    } | {"no-api": 1}
    # Each worker keeps its own brute-force guard, and the kernel spreads a
    # client's connections over the workers by their source ports, so each
    # takes its share of the limit: together they let about as many
    # failures through as one process would, not N times as many.
    failures = settings.max_auth_failures
    if failures > 0:
        told["max-auth-failures"] = -(-failures // settings.workers)
    # The same for the cap on one address's connections without a console
    # (--max-pending-per-address); --max-connections and the descriptor
    # budget each worker derives from its own open-files limit, as each
    # has its own descriptor table.
    pending = settings.limits.max_pending_per_address
    if pending > 0:
        told["max-pending-per-address"] = -(-pending // settings.workers)
    return told


class WorkerProtocol(ProcessProtocol):
    """
    One worker process: sends it its configuration, logs what it writes
    to its stdout and stderr, and tells the pool when it ends.
    """

    _log = Logger()

    def __init__(self, pool: WorkerPool, number: int, config: bytes) -> None:
        self.pool = pool
        self.number = number
        self.config = config
        self.ended: Deferred[None] = Deferred()
        #: The process id, kept after the process has ended.
        self.pid: int | None = None
        self._out = b""
        self._err = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        # stdin stays open: a worker whose stdin closes knows the
        # supervisor is gone and stops.
        self.transport.write(self.config + b"\n")

    def outReceived(self, data: bytes) -> None:
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            self._emit(line.strip(b"\x1e \r"))

    def _emit(self, line: bytes) -> None:
        if not line:
            return
        try:
            event = eventFromJSON(line.decode("utf-8", "replace"))
        except ValueError:
            self._log.info(
                "worker {number}: {line}", number=self.number, line=line.decode()
            )
            return
        event["log_system"] = worker_system(self.number)
        event["worker"] = self.number
        globalLogPublisher(event)

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for line in lines:
            if line.strip():
                self._log.warn(
                    "worker {number} stderr: {line}",
                    number=self.number,
                    line=line.decode("utf-8", "replace"),
                )

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.pool.worker_ended(self, reason)


class WorkerPool(Service):
    """
    Keeps one worker running on each of C{socks} while the service runs.

    @param config: the twistd options, as JSON-able values, each worker's
        configuration (a worker runs the proxy only).
    @param log: where the workers write their log.
    @param logfile: this process's log file, when the workers share it
        (each worker inherits its descriptor).
    @param metrics: where the workers write their metrics, told of every
        worker that ends and removed when the pool stops.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        socks: list[socket.socket],
        config: dict[str, Any],
        executable: str = sys.executable,
        metrics: WorkerMetricsDirectory | None = None,
        log: WorkerLog | None = None,
        logfile: SharedLogFile | None = None,
    ) -> None:
        self.reactor = reactor
        self.socks = socks
        self.count = len(socks)
        self.options = config
        self.log = log or WorkerLog()
        self.logfile = logfile
        self.stop_timeout = float(config.get("drain-timeout", 10.0)) + STOP_GRACE
        self.executable = executable
        self.metrics = metrics
        self.workers: dict[int, WorkerProtocol] = {}
        self.started_at: dict[int, float] = {}
        self.restarts = 0

    def startService(self) -> None:
        super().startService()
        host, port = self.socks[0].getsockname()[:2]
        self._log.info(
            "{count} workers share {host} port {port}",
            count=self.count,
            host=host,
            port=port,
        )
        if self.metrics is not None:
            self._log.info("workers' metrics in {path}", path=self.metrics.path)
        for number in range(1, self.count + 1):
            self.spawn(number)

    def told(self, number: int) -> bytes:
        """Worker C{number}'s configuration line."""
        told = {"options": self.options, "number": number, "log": self.log.to_json()}
        return json.dumps(told).encode("utf-8")

    def spawn(self, number: int) -> None:
        worker = WorkerProtocol(self, number, self.told(number))
        env = dict(os.environ)
        if self.metrics is not None:
            env.update(self.metrics.env())
        fds: dict[int, int | str] = {
            0: "w",
            1: self.log.stdout_fd(),
            2: "r",
            LISTEN_FD: self.socks[number - 1].fileno(),
        }
        if self.logfile is not None:
            fds[LOG_FD] = self.logfile.fileno()
        self.reactor.spawnProcess(
            worker,
            self.executable,
            [self.executable, "-m", "txvnc.service.worker"],
            env=env,
            childFDs=fds,
        )
        self.workers[number] = worker
        self.started_at[number] = self.reactor.seconds()
        assert worker.transport is not None
        worker.pid = worker.transport.pid
        self._log.info(
            "worker {number} started (pid {pid})",
            number=number,
            pid=worker.transport.pid,
        )

    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return list(self.pids_by_number().values())

    def pids_by_number(self) -> dict[int, int]:
        """The running workers' process ids by worker number (for metrics)."""
        return {
            number: w.transport.pid
            for number, w in self.workers.items()
            if w.transport is not None and w.transport.pid is not None
        }

    def worker_ended(self, worker: WorkerProtocol, reason: Failure) -> None:
        number = worker.number
        if self.workers.get(number) is worker:
            del self.workers[number]
        if self.metrics is not None and worker.pid is not None:
            try:
                self.metrics.process_ended(worker.pid)
            except Exception:
                self._log.failure(
                    "worker {number}: cannot keep its metrics", number=number
                )
        if not self.running:
            return
        code = reason.value.exitCode if reason.check(ProcessTerminated) else 0
        sig = reason.value.signal if reason.check(ProcessTerminated) else None
        self._log.error(
            "worker {number} ended ({why}); starting it again",
            number=number,
            why=(
                f"signal {sig}"
                if sig
                else f"exit code {code}"
                if not reason.check(ProcessDone)
                else "exit code 0"
            ),
        )
        self.restarts += 1
        lived = self.reactor.seconds() - self.started_at.get(number, 0.0)
        delay = 0.0 if lived > HEALTHY_AFTER else RESTART_DELAY
        self.reactor.callLater(delay, self._respawn, number)

    def _respawn(self, number: int) -> None:
        if not self.running or number in self.workers:
            return
        try:
            self.spawn(number)
        except Exception:
            # fork can fail for a while (out of processes or memory): keep
            # trying, or this worker's share of the port is never served.
            self._log.failure(
                "worker {number}: cannot start it again; retrying in {delay}s",
                number=number,
                delay=RESTART_DELAY,
            )
            self.reactor.callLater(RESTART_DELAY, self._respawn, number)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        ended = []
        for worker in list(self.workers.values()):
            ended.append(worker.ended)
            self._signal(worker, signal.SIGTERM)
            killer = self.reactor.callLater(
                self.stop_timeout, self._signal, worker, signal.SIGKILL
            )
            worker.ended.addCallback(_cancel, killer)
        d = DeferredList(ended)
        d.addBoth(self._close_sockets)
        return d

    def _close_sockets(self, result: object) -> object:
        for sock in self.socks:
            sock.close()
        if self.metrics is not None:
            self.metrics.remove()
        return result

    def reload(self) -> None:
        """
        Pass the twistd process's SIGHUP on to every worker, so each
        re-reads what it reloads (the proxy's API key) as one process would.
        """
        for worker in list(self.workers.values()):
            self._signal(worker, signal.SIGHUP)

    @staticmethod
    def _signal(worker: WorkerProtocol, sig: int) -> None:
        transport: Any = worker.transport
        if transport is not None and transport.pid is not None:
            transport.signalProcess(sig)


def _cancel(result: None, call: Any) -> None:
    if call.active():
        call.cancel()
