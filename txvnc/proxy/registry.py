"""
The consoles open in one proxy process: what the revocation follower
closes and reports, the metrics count, and a graceful shutdown waits for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from twisted.internet.defer import Deferred


class Relayed(Protocol):
    """
    What the registry reads of a console: its byte counts.
    """

    @property
    def bytes_to_vnc(self) -> int: ...

    @property
    def bytes_from_vnc(self) -> int: ...


class ConsoleRegistry:
    """
    A set of open consoles (iterate it, take its length), the bytes relayed
    by those already closed, and a way to wait until none is open.
    """

    def __init__(self) -> None:
        self._open: set[Any] = set()
        self._idle_waiters: list[Deferred[None]] = []
        #: Bytes relayed by consoles already closed (for metrics).
        self.closed_bytes_to_vnc = 0
        self.closed_bytes_from_vnc = 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, console: object) -> bool:
        return console in self._open

    def add(self, console: Relayed) -> None:
        self._open.add(console)

    def remove(self, console: Relayed) -> None:
        """
        C{console} closed: its bytes join the totals, and waiters on
        L{when_idle} fire if it was the last.
        """
        if console not in self._open:
            return
        self._open.discard(console)
        self.closed_bytes_to_vnc += console.bytes_to_vnc
        self.closed_bytes_from_vnc += console.bytes_from_vnc
        if not self._open:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def when_idle(self) -> Deferred[None]:
        """
        Fires once no console is open (at once when none is). Autobahn's
        per-connection C{is_closed} can fire before C{onClose} has run, so
        waiting on those would let a drain finish before the consoles'
        closing lines are logged and their counts are in.
        """
        d: Deferred[None] = Deferred()
        if self._open:
            self._idle_waiters.append(d)
        else:
            d.callback(None)
        return d
