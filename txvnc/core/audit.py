"""
The audit log (C{--audit-log FILE}): one JSON object a line for every mint,
failed check, revocation and console open or close, for the people who must
later answer "who opened which console, when".

A line names a token only by its SHA-256 (C{token_hash}), never the token,
and never a key: the actor is the role of the key that acted.
"""

from __future__ import annotations

import json
from typing import IO, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from txvnc.core.tokens import iso8601


class AuditLog:
    """
    Appends events to a file, or drops them when there is none.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, path: str | None = None) -> None:
        self.clock = clock
        self.path = path
        self._file: IO[str] | None = None
        if path is not None:
            # Line-buffered: each event reaches the file as it happens.
            self._file = open(path, "a", encoding="utf-8", buffering=1)

    def record(self, event: str, **fields: Any) -> None:
        """
        Write one event with its time; fields whose value is L{None} are
        left out.
        """
        if self._file is None:
            return
        now = self.clock.seconds()
        line = {"time": iso8601(now), "ts": round(now, 3), "event": event}
        line.update({k: v for k, v in fields.items() if v is not None})
        try:
            self._file.write(json.dumps(line, sort_keys=True) + "\n")
        except OSError as e:
            self._log.error(
                "cannot write the audit log {path}: {why}",
                path=self.path,
                why=e.strerror,
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
