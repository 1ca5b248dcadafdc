"""
C{--log-format json}: one JSON object per line, for log shippers.

Each line has C{time} (ISO 8601, UTC), C{level}, C{namespace}, C{message}
(the event formatted as the text log would show it), and every plain field
the event carries (C{conn_id}, C{client}, C{token_ref}, C{instance_uuid},
C{bytes_to_vnc}...), so a console's lines can be selected by C{conn_id}
without parsing messages. A failure adds C{traceback}.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.application.service import IServiceCollection, MultiService
from twisted.logger import ILogObserver, LogEvent, formatEvent
from twisted.python.components import Componentized
from zope.interface import implementer

#: Keys of old-style (twisted.python.log) events that repeat the message.
_LEGACY_KEYS = frozenset({"message", "format", "system", "isError", "time", "why"})

_PLAIN = (str, int, float, bool, type(None))


@implementer(ILogObserver)
class JSONLineObserver:
    """
    Writes each event to C{out} as one line of JSON.
    """

    def __init__(self, out: IO[str] | None = None) -> None:
        # The real standard output: once twistd starts logging, sys.stdout
        # is a file that turns writes into log events (which would come
        # back here).
        self._out = out or sys.__stdout__

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(
                event.get("log_time", 0.0), tz=UTC
            ).isoformat(timespec="milliseconds"),
            "level": level.name if level is not None else "info",
            "namespace": event.get("log_namespace", "-"),
            "message": formatEvent(event),
        }
        for key, value in event.items():
            if key.startswith("log_") or key in _LEGACY_KEYS or key in record:
                continue
            if isinstance(value, _PLAIN):
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        if self._out is not None:
            self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._out.flush()


class LoggedService(MultiService):
    """
    txvnc's top service. With a C{log_observer}, it hands that observer to
    the twistd application it joins, which twistd then logs to instead of
    its text log (twistd asks the application for an L{ILogObserver} before
    it starts logging).
    """

    log_observer: ILogObserver | None = None

    def setServiceParent(self, parent: IServiceCollection) -> None:
        super().setServiceParent(parent)
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
