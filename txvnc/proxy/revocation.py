"""
How a proxy learns that consoles it holds must close, and tells the token
API which consoles it holds (C{docs/revocation.md} has the design).

Every C{interval} seconds the proxy asks the API for the revocation feed
after its cursor (C{GET /v1/revocations?after=N}); each entry names a token
hash, an instance or a console, and every open console it matches closes
with 4001 (or 4006 for a console an administrator closed). Each console
remembers the feed's number at the moment its token was taken, so an entry
closes exactly the consoles whose token was granted before it: a console
opened with a token minted after an instance was revoked stays open. The
same loop reports the proxy's open consoles (C{PUT /v1/proxies/NODE/sessions})
when they change and every C{report_interval} seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from txvnc.client import ConsoleAuthClient, ConsoleAuthError, ConsoleAuthUnavailable

DEFAULT_INTERVAL = 1.0
DEFAULT_REPORT_INTERVAL = 10.0
#: Entries kept for consoles still opening when their entry arrived.
RECENT_ENTRIES = 10_000


class Revocable(Protocol):
    """
    What the follower needs of a console.
    """

    conn_id: str
    token_hash: str | None
    revocation_cursor: int

    @property
    def instance_uuid(self) -> str | None: ...

    def revoke(self, kind: str) -> None: ...

    def report(self) -> dict[str, Any]: ...


def matches(console: Revocable, kind: str, value: str, seq: int) -> bool:
    """
    Whether feed entry C{seq} (C{kind}, C{value}) closes C{console}.
    """
    if seq <= console.revocation_cursor:
        return False
    if kind == "token":
        return console.token_hash == value
    if kind == "instance":
        return console.instance_uuid is not None and console.instance_uuid == value
    if kind == "session":
        return console.conn_id == value
    return False


class RevocationFollower(Service):
    """
    Polls the feed and reports consoles, on the clock it is given.

    @ivar consoles: the proxy's open consoles (the factory's registry).
    @ivar cursor: the last feed number seen, L{None} before the first
        console gives one (with no console there is nothing to close).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        auth: ConsoleAuthClient,
        consoles: Collection[Any],
        node: str,
        interval: float = DEFAULT_INTERVAL,
        report_interval: float = DEFAULT_REPORT_INTERVAL,
    ) -> None:
        self.clock = clock
        self.auth = auth
        self.consoles = consoles
        self.node = node
        self.interval = interval
        self.report_interval = report_interval
        self.cursor: int | None = None
        self.recent: deque[tuple[int, str, str]] = deque(maxlen=RECENT_ENTRIES)
        self.dirty = False
        self._last_report: float | None = None
        self._reported_any = False
        self._call: IDelayedCall | None = None
        self._running: Deferred[None] | None = None
        self._failing = False

    # Hooks for the factory

    def opened(self, console: Revocable) -> bool:
        """
        A console is about to open; L{False} when an entry already seen
        closes it (it was revoked while its check was on the way back).
        """
        if self.cursor is None or console.revocation_cursor < self.cursor:
            self.cursor = (
                console.revocation_cursor
                if self.cursor is None
                else min(self.cursor, console.revocation_cursor)
            )
        self.dirty = True
        return not any(matches(console, k, v, s) for s, k, v in self.recent)

    def closed(self, console: Revocable) -> None:
        self.dirty = True

    # The loop

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return self._running

    def _schedule(self) -> None:
        if self.running:
            self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self._call = None
        self._running = Deferred.fromCoroutine(self.poll())
        self._running.addErrback(
            lambda f: self._log.failure("revocation poll failed", f)
        )
        self._running.addBoth(lambda _: self._schedule())

    async def poll(self) -> None:
        """
        One round: read the feed, close what it names, report if due.
        """
        try:
            if self.cursor is not None:
                await self._follow(self.cursor)
            now = self.clock.seconds()
            due = (
                self._last_report is None
                or now - self._last_report >= self.report_interval
            )
            if self.dirty or (due and (self.consoles or self._reported_any)):
                await self._report(now)
        except (ConsoleAuthUnavailable, ConsoleAuthError) as e:
            if not self._failing:
                self._failing = True
                self._log.error(
                    "cannot follow revocations at the token API: {why}; "
                    "retrying every {interval}s",
                    why=str(e),
                    interval=self.interval,
                )
            return
        if self._failing:
            self._failing = False
            self._log.info("following revocations again")

    async def _follow(self, after: int) -> None:
        latest, entries = await self.auth.revocations(after)
        if latest < after:
            # The feed was reset (the API's memory store restarted): its
            # numbers start again, so judge every open console by all of it.
            self._log.warn(
                "the revocation feed restarted (at {latest}, we were at {after})",
                latest=latest,
                after=after,
            )
            for console in self.consoles:
                console.revocation_cursor = 0
            self.recent.clear()
            self.cursor = 0
            latest, entries = await self.auth.revocations(0)
        self.apply(_parse(entries))
        self.cursor = max(latest, self.cursor or 0)

    def apply(self, entries: Iterable[tuple[int, str, str]]) -> int:
        """
        Close every open console the entries name; how many closed.
        """
        closed = 0
        for seq, kind, value in entries:
            self.recent.append((seq, kind, value))
            for console in list(self.consoles):
                if matches(console, kind, value, seq):
                    console.revoke(kind)
                    closed += 1
        return closed

    async def _report(self, now: float) -> None:
        self.dirty = False
        sessions = [console.report() for console in self.consoles]
        ttl = max(1, int(self.report_interval * 3))
        try:
            await self.auth.report_sessions(self.node, sessions, ttl)
        except Exception:
            self.dirty = True
            raise
        self._last_report = now
        self._reported_any = bool(sessions)


def _parse(entries: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    parsed = []
    for entry in entries:
        try:
            parsed.append((int(entry["seq"]), str(entry["kind"]), str(entry["value"])))
        except (KeyError, TypeError, ValueError):
            continue
    return parsed
