"""
The memory store (C{--store memory:}): tokens die with the process. For
tests and single-process demos.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from txvnc.consoleauth.sessions import (
    REVOCATION_MAX_ENTRIES,
    REVOCATION_RETENTION,
    Revocation,
    SessionRecord,
)
from txvnc.consoleauth.store import ITokenStore
from txvnc.consoleauth.tokens import TokenRecord
from txvnc.core.digest import RunningDigest


@implementer(ITokenStore)
class MemoryTokenStore:
    """
    A throwaway store for tests and single-process demos: tokens die with the
    process. Every method finishes before it returns, which makes L{use}
    atomic in a single-threaded reactor.
    """

    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}
        self._feed: list[Revocation] = []
        self._seq = 0
        self._nodes: dict[str, _Report] = {}

    def add(self, record: TokenRecord) -> Deferred[None]:
        self._records[record.token_hash] = record
        return succeed(None)

    def get(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        record = self._records.get(token_hash)
        if record is not None and not record.is_live(now):
            record = None
        return succeed(record)

    def use(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        record = self._records.get(token_hash)
        if record is None or not record.is_live(now):
            return succeed(None)
        if record.single_use:
            del self._records[token_hash]
        return succeed(record)

    def list_tokens(
        self, instance_uuid: str | None, now: float
    ) -> Deferred[list[TokenRecord]]:
        found = [
            r
            for r in self._records.values()
            if r.is_live(now)
            and (instance_uuid is None or r.instance_uuid == instance_uuid)
        ]
        return succeed(sorted(found, key=lambda r: (r.created_at, r.token_hash)))

    def remove(self, token_hash: str) -> Deferred[bool]:
        return succeed(self._records.pop(token_hash, None) is not None)

    def remove_instance(self, instance_uuid: str) -> Deferred[int]:
        doomed = [
            h for h, r in self._records.items() if r.instance_uuid == instance_uuid
        ]
        for h in doomed:
            del self._records[h]
        return succeed(len(doomed))

    def add_revocation(self, kind: str, value: str, now: float) -> Deferred[int]:
        self._seq += 1
        self._feed.append(Revocation(self._seq, kind, value, now))
        del self._feed[:-REVOCATION_MAX_ENTRIES]
        return succeed(self._seq)

    def revocations(self, after: int) -> Deferred[tuple[int, list[Revocation]]]:
        return succeed((self._seq, [r for r in self._feed if r.seq > after]))

    def revocation_cursor(self) -> Deferred[int]:
        return succeed(self._seq)

    def put_sessions(
        self, node: str, sessions: list[SessionRecord], now: float, ttl: float
    ) -> Deferred[None]:
        report = _Report(now + ttl)
        for session in sessions:
            report.add(session)
        self._nodes[node] = report
        return succeed(None)

    def update_sessions(
        self,
        node: str,
        added: list[SessionRecord],
        removed: list[str],
        now: float,
        ttl: float,
    ) -> Deferred[str | None]:
        report = self._nodes.get(node)
        if report is None or report.until <= now:
            return succeed(None)
        for session_id in removed:
            report.remove(session_id)
        for session in added:
            report.add(session)
        report.until = now + ttl
        return succeed(str(report.digest))

    def sessions(self, now: float) -> Deferred[list[SessionRecord]]:
        return succeed(
            [
                s
                for node in sorted(self._nodes)
                if self._nodes[node].until > now
                for s in self._nodes[node].sessions.values()
            ]
        )

    def purge(self, now: float) -> Deferred[int]:
        doomed = [h for h, r in self._records.items() if not r.is_live(now)]
        for h in doomed:
            del self._records[h]
        self._feed = [r for r in self._feed if r.at > now - REVOCATION_RETENTION]
        for node in [n for n, r in self._nodes.items() if r.until <= now]:
            del self._nodes[node]
        return succeed(len(doomed))

    def close(self) -> Deferred[None]:
        return succeed(None)


class _Report:
    """One proxy's consoles, by id, with their digest and expiry."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.sessions: dict[str, SessionRecord] = {}
        self.digest = RunningDigest()

    def add(self, session: SessionRecord) -> None:
        if session.id not in self.sessions:
            self.digest.add(session.id)
        self.sessions[session.id] = session

    def remove(self, session_id: str) -> None:
        if self.sessions.pop(session_id, None) is not None:
            self.digest.remove(session_id)
