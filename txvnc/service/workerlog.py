"""
Where the workers of C{twistd txvnc --workers N} write their log: each
writes its own lines where twistd writes the twistd process's, so an
operator reads one log, every worker's line named C{[txvnc-worker-N]}
(with a C{worker} field in JSON), and a line costs one process one write
instead of crossing a pipe to be decoded and written again by the twistd
process.

 - C{-n} without C{--logfile}, C{--logfile -}, or C{--log-format json}:
   standard output, which the workers inherit.
 - C{--logfile FILE}, or a daemon's C{twistd.log}: that file, which every
   process appends to (L{txvnc.ops.sharedlog.SharedLogFile}), a worker
   through the twistd process's descriptor (L{LOG_FD}) until the file
   rotates (at 1,000,000 bytes and on C{SIGUSR1}, as twistd's does).
 - C{--syslog}, C{--logger}: only the twistd process can write there, so
   the workers send it their events as JSON lines and it logs them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, cast

from twisted.logger import (
    ILogObserver,
    LogEvent,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

from txvnc.ops.logs import JSONLineObserver
from txvnc.ops.sharedlog import DescriptorWriter, SharedLogFile

STDOUT = "stdout"
FILE = "file"
#: A worker's descriptor of the log file (L{FILE}): the twistd process's
#: own, inherited, so a worker needs no right to open the file.
LOG_FD = 4
#: The workers send their events to the twistd process, which logs them.
RELAY = "relay"


def worker_system(number: int) -> str:
    """The C{system} of worker C{number}'s log lines."""
    return f"txvnc-worker-{number}"


@dataclass(frozen=True)
class WorkerLog:
    """
    Where the workers log: C{to} is L{STDOUT}, L{FILE} (C{path}) or
    L{RELAY}; C{json} for C{--log-format json}.
    """

    to: str = RELAY
    path: str | None = None
    json: bool = False

    @classmethod
    def for_twistd(cls, twistd: Mapping[str, Any] | None, log_format: str) -> WorkerLog:
        """
        Where twistd logs, given its own options (L{None} when not run by
        twistd), decided as twistd decides it.
        """
        json = log_format == "json"
        if twistd is None or twistd.get("logger") or twistd.get("syslog"):
            return cls(RELAY, json=json)
        if json:
            # txvnc's JSON observer writes to standard output whatever
            # --logfile says.
            return cls(STDOUT, json=True)
        logfile = twistd.get("logfile")
        if logfile == "-" or (twistd.get("nodaemon") and not logfile):
            return cls(STDOUT)
        return cls(FILE, os.path.abspath(logfile or "twistd.log"))

    def to_json(self) -> dict[str, Any]:
        return {"to": self.to, "path": self.path, "json": self.json}

    @classmethod
    def from_json(cls, told: Mapping[str, Any]) -> WorkerLog:
        return cls(told["to"], told.get("path"), bool(told.get("json")))

    def stdout_fd(self) -> int | str:
        """The worker's standard output, in C{spawnProcess}'s C{childFDs}."""
        return 1 if self.to == STDOUT else "r"

    def observer(self, number: int) -> ILogObserver:
        """Worker C{number}'s log observer."""
        base: ILogObserver
        if self.to == FILE:
            assert self.path is not None
            logfile = SharedLogFile(self.path, fd=LOG_FD)
            base = textFileLogObserver(cast(IO[str], logfile))
        elif self.to == STDOUT and self.json:
            base = JSONLineObserver(cast(IO[str], DescriptorWriter(1)))
        elif self.to == STDOUT:
            base = textFileLogObserver(cast(IO[str], DescriptorWriter(1)))
        else:
            base = jsonFileLogObserver(sys.stdout)
        return NamedWorker(base, number)


@implementer(ILogObserver)
class NamedWorker:
    """Names each event as worker C{number}'s, then hands it on."""

    def __init__(self, observer: ILogObserver, number: int) -> None:
        self.observer = observer
        self.system = worker_system(number)
        self.number = number

    def __call__(self, event: LogEvent) -> None:
        event["log_system"] = self.system
        event["worker"] = self.number
        self.observer(event)
