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
same loop reports the proxy's open consoles when they change and every
C{report_interval} seconds.

Both grow with what changes, not with how many consoles are open: feed
entries find their consoles through an index by token hash, instance and
console id (L{ConsoleIndex}), and a report carries only the consoles opened
and closed since the last one, with the digest of the whole set
(C{PATCH /v1/proxies/NODE/sessions}, L{txvnc.core.digest}). The whole list
(C{PUT}) goes first, whenever the API answers that its copy does not add up
(409: a restarted API, a lost report), and always to an API too old to take
changes (404 or 405).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from txvnc.client import ConsoleAuthClient, ConsoleAuthError, ConsoleAuthUnavailable
from txvnc.core.digest import RunningDigest

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


class ConsoleIndex:
    """
    The open consoles by id, token hash and instance, so that a feed entry
    costs the consoles it names, not every open console.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Revocable] = {}
        self._by_token: dict[str, set[Revocable]] = {}
        self._by_instance: dict[str, set[Revocable]] = {}

    def __iter__(self) -> Iterator[Revocable]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self._by_id

    def add(self, console: Revocable) -> bool:
        """Index C{console}; L{False} if it already was."""
        if console.conn_id in self._by_id:
            return False
        self._by_id[console.conn_id] = console
        if console.token_hash is not None:
            self._by_token.setdefault(console.token_hash, set()).add(console)
        if console.instance_uuid is not None:
            self._by_instance.setdefault(console.instance_uuid, set()).add(console)
        return True

    def remove(self, console: Revocable) -> bool:
        """Forget C{console}; L{False} if it was not indexed."""
        if self._by_id.get(console.conn_id) is not console:
            return False
        del self._by_id[console.conn_id]
        for index, key in (
            (self._by_token, console.token_hash),
            (self._by_instance, console.instance_uuid),
        ):
            if key is not None and key in index:
                index[key].discard(console)
                if not index[key]:
                    del index[key]
        return True

    def named(self, kind: str, value: str) -> list[Revocable]:
        """The consoles a feed entry of C{kind} and C{value} could name."""
        if kind == "token":
            return list(self._by_token.get(value, ()))
        if kind == "instance":
            return list(self._by_instance.get(value, ()))
        if kind == "session":
            console = self._by_id.get(value)
            return [console] if console is not None else []
        return []


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
        self.index = ConsoleIndex()
        #: Opened and closed since the last report the API took.
        self._added: dict[str, Revocable] = {}
        self._removed: set[str] = set()
        self._digest = RunningDigest()
        #: The next report must be the whole list (PUT).
        self._resend = True
        #: The API takes change reports (PATCH); L{False} for an older one.
        self._deltas = True
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
        if self.index.add(console):
            self._digest.add(console.conn_id)
            self._added[console.conn_id] = console
        return not any(matches(console, k, v, s) for s, k, v in self.recent)

    def closed(self, console: Revocable) -> None:
        self.dirty = True
        if self.index.remove(console):
            self._digest.remove(console.conn_id)
            if self._added.pop(console.conn_id, None) is None:
                self._removed.add(console.conn_id)

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
            for console in self.index.named(kind, value):
                if matches(console, kind, value, seq):
                    console.revoke(kind)
                    closed += 1
        return closed

    async def _report(self, now: float) -> None:
        self.dirty = False
        ttl = max(1, int(self.report_interval * 3))
        added, removed = self._added, self._removed
        self._added, self._removed = {}, set()
        try:
            if not self._resend and self._deltas:
                taken = await self._send_changes(added, removed, ttl)
            else:
                taken = False
            if not taken:
                # Snapshot and send at once: later changes are in the new
                # _added and _removed, on top of this list.
                sessions = [console.report() for console in self.index]
                await self.auth.report_sessions(self.node, sessions, ttl)
                self._resend = False
        except Exception:
            self.dirty = True
            for conn_id, console in added.items():
                if conn_id in self.index:
                    self._added.setdefault(conn_id, console)
            self._removed |= removed
            raise
        self._last_report = now
        self._reported_any = bool(self.index)

    async def _send_changes(
        self, added: dict[str, Revocable], removed: set[str], ttl: int
    ) -> bool:
        """
        Send what changed; L{False} when the API needs the whole list.
        """
        digest = str(self._digest)
        try:
            taken = await self.auth.update_sessions(
                self.node,
                [console.report() for console in added.values()],
                sorted(removed),
                digest,
                ttl,
            )
        except ConsoleAuthError as e:
            if e.status not in (404, 405):
                raise
            self._log.info(
                "the token API takes whole console lists only; sending those"
            )
            self._deltas = False
            return False
        if not taken:
            self._resend = True
        return taken


def _parse(entries: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    parsed = []
    for entry in entries:
        try:
            parsed.append((int(entry["seq"]), str(entry["kind"]), str(entry["value"])))
        except (KeyError, TypeError, ValueError):
            continue
    return parsed
