"""
The default store: one SQLite file, so tokens survive a restart.

Queries run in a one-thread L{adbapi.ConnectionPool}: a slow disk delays a
token check, never the reactor that relays every open console. Each write is
one statement, so it is atomic even with a second process on the same file
(L{SQLiteTokenStore.use} deletes a single-use token with C{DELETE ...
RETURNING}: whoever deletes it is the one who gets it).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from txvnc.consoleauth.sessions import (
    REVOCATION_MAX_ENTRIES,
    REVOCATION_RETENTION,
    Revocation,
    SessionRecord,
    session_from_json,
    session_to_json,
)
from txvnc.consoleauth.store import ITokenStore
from txvnc.consoleauth.tokens import TokenRecord
from txvnc.core.digest import RunningDigest

# The record itself is JSON: only what queries filter on has a column, so a
# new token field needs no migration.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS console_tokens (
    token_hash    TEXT PRIMARY KEY,
    instance_uuid TEXT,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    single_use    INTEGER NOT NULL,
    record        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_tokens_by_instance
    ON console_tokens (instance_uuid);
CREATE INDEX IF NOT EXISTS console_tokens_by_expiry ON console_tokens (expires_at);
CREATE TABLE IF NOT EXISTS revocations (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    kind  TEXT NOT NULL,
    value TEXT NOT NULL,
    at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS proxy_reports (
    node       TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    count      INTEGER NOT NULL,
    total      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS proxy_report_sessions (
    node   TEXT NOT NULL,
    id     TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (node, id)
);
"""
# One row a console (not one JSON list a proxy, as before: the table
# proxy_sessions, which an older API on the same file may still write), so
# that a proxy's changes touch only their own rows.


def _open_connection(connection: sqlite3.Connection) -> None:
    # WAL lets the purge run beside token checks; a short busy timeout covers
    # a second process (a restart overlapping the old one) on the same file.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA busy_timeout=5000")
    connection.executescript(_SCHEMA)


def _records(rows: list[Any]) -> list[TokenRecord]:
    return [TokenRecord.from_json(row[0]) for row in rows]


def _first(rows: list[Any]) -> TokenRecord | None:
    return TokenRecord.from_json(rows[0][0]) if rows else None


@implementer(ITokenStore)
class SQLiteTokenStore:
    """
    Tokens, the revocation feed and proxies' console reports in one file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_open_connection,
        )

    def add(self, record: TokenRecord) -> Deferred[None]:
        return self._pool.runOperation(
            "INSERT INTO console_tokens (token_hash, instance_uuid, created_at,"
            " expires_at, single_use, record) VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.token_hash,
                record.instance_uuid,
                record.created_at,
                record.expires_at,
                int(record.single_use),
                record.to_json(),
            ),
        )

    def get(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        d = self._pool.runQuery(
            "SELECT record FROM console_tokens WHERE token_hash = ? AND expires_at > ?",
            (token_hash, now),
        )
        return d.addCallback(_first)

    def use(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        def interaction(cursor: Any) -> TokenRecord | None:
            cursor.execute(
                "DELETE FROM console_tokens WHERE token_hash = ? AND single_use = 1"
                " AND expires_at > ? RETURNING record",
                (token_hash, now),
            )
            rows = cursor.fetchall()
            if rows:
                return _first(rows)
            cursor.execute(
                "SELECT record FROM console_tokens WHERE token_hash = ?"
                " AND single_use = 0 AND expires_at > ?",
                (token_hash, now),
            )
            return _first(cursor.fetchall())

        return self._pool.runInteraction(interaction)

    def list_tokens(
        self, instance_uuid: str | None, now: float
    ) -> Deferred[list[TokenRecord]]:
        if instance_uuid is None:
            d = self._pool.runQuery(
                "SELECT record FROM console_tokens WHERE expires_at > ?"
                " ORDER BY created_at, token_hash",
                (now,),
            )
        else:
            d = self._pool.runQuery(
                "SELECT record FROM console_tokens WHERE instance_uuid = ?"
                " AND expires_at > ? ORDER BY created_at, token_hash",
                (instance_uuid, now),
            )
        return d.addCallback(_records)

    def _delete(self, sql: str, args: tuple[Any, ...]) -> Deferred[int]:
        def interaction(cursor: Any) -> int:
            cursor.execute(sql, args)
            return int(cursor.rowcount)

        return self._pool.runInteraction(interaction)

    def remove(self, token_hash: str) -> Deferred[bool]:
        d = self._delete(
            "DELETE FROM console_tokens WHERE token_hash = ?", (token_hash,)
        )
        return d.addCallback(lambda count: count > 0)

    def remove_instance(self, instance_uuid: str) -> Deferred[int]:
        return self._delete(
            "DELETE FROM console_tokens WHERE instance_uuid = ?", (instance_uuid,)
        )

    def add_revocation(self, kind: str, value: str, now: float) -> Deferred[int]:
        def interaction(cursor: Any) -> int:
            cursor.execute(
                "INSERT INTO revocations (kind, value, at) VALUES (?, ?, ?)",
                (kind, value, now),
            )
            seq = int(cursor.lastrowid)
            cursor.execute(
                "DELETE FROM revocations WHERE seq <= ?",
                (seq - REVOCATION_MAX_ENTRIES,),
            )
            return seq

        return self._pool.runInteraction(interaction)

    def revocations(self, after: int) -> Deferred[tuple[int, list[Revocation]]]:
        def interaction(cursor: Any) -> tuple[int, list[Revocation]]:
            # AUTOINCREMENT keeps the last number even when the feed is empty.
            cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = 'revocations'")
            row = cursor.fetchone()
            latest = int(row[0]) if row else 0
            cursor.execute(
                "SELECT seq, kind, value, at FROM revocations WHERE seq > ?"
                " ORDER BY seq",
                (after,),
            )
            entries = [
                Revocation(int(s), k, v, float(a)) for s, k, v, a in cursor.fetchall()
            ]
            return latest, entries

        return self._pool.runInteraction(interaction)

    def revocation_cursor(self) -> Deferred[int]:
        d = self._pool.runQuery(
            "SELECT seq FROM sqlite_sequence WHERE name = 'revocations'"
        )
        return d.addCallback(lambda rows: int(rows[0][0]) if rows else 0)

    def put_sessions(
        self, node: str, sessions: list[SessionRecord], now: float, ttl: float
    ) -> Deferred[None]:
        def interaction(cursor: Any) -> None:
            cursor.execute("DELETE FROM proxy_report_sessions WHERE node = ?", (node,))
            digest = RunningDigest()
            rows = {}
            for session in sessions:
                if session.id not in rows:
                    digest.add(session.id)
                rows[session.id] = (node, session.id, session_to_json(session))
            cursor.executemany(
                "INSERT INTO proxy_report_sessions (node, id, record) VALUES (?, ?, ?)",
                list(rows.values()),
            )
            cursor.execute(
                "INSERT OR REPLACE INTO proxy_reports (node, expires_at, count, total)"
                " VALUES (?, ?, ?, ?)",
                (node, now + ttl, digest.count, digest.total),
            )

        return self._pool.runInteraction(interaction)

    def update_sessions(
        self,
        node: str,
        added: list[SessionRecord],
        removed: list[str],
        now: float,
        ttl: float,
    ) -> Deferred[str | None]:
        def interaction(cursor: Any) -> str | None:
            cursor.execute(
                "SELECT count, total FROM proxy_reports"
                " WHERE node = ? AND expires_at > ?",
                (node, now),
            )
            row = cursor.fetchone()
            if row is None:
                return None
            digest = RunningDigest()
            digest.count, digest.total = int(row[0]), int(row[1])
            for session_id in removed:
                cursor.execute(
                    "DELETE FROM proxy_report_sessions WHERE node = ? AND id = ?",
                    (node, session_id),
                )
                if cursor.rowcount:
                    digest.remove(session_id)
            for session in added:
                record = session_to_json(session)
                cursor.execute(
                    "INSERT OR IGNORE INTO proxy_report_sessions (node, id, record)"
                    " VALUES (?, ?, ?)",
                    (node, session.id, record),
                )
                if cursor.rowcount:
                    digest.add(session.id)
                else:
                    cursor.execute(
                        "UPDATE proxy_report_sessions SET record = ?"
                        " WHERE node = ? AND id = ?",
                        (record, node, session.id),
                    )
            cursor.execute(
                "UPDATE proxy_reports SET expires_at = ?, count = ?, total = ?"
                " WHERE node = ?",
                (now + ttl, digest.count, digest.total, node),
            )
            return str(digest)

        return self._pool.runInteraction(interaction)

    def sessions(self, now: float) -> Deferred[list[SessionRecord]]:
        d = self._pool.runQuery(
            "SELECT s.record FROM proxy_report_sessions AS s"
            " JOIN proxy_reports AS r ON r.node = s.node"
            " WHERE r.expires_at > ? ORDER BY s.node",
            (now,),
        )
        return d.addCallback(lambda rows: [session_from_json(row[0]) for row in rows])

    def purge(self, now: float) -> Deferred[int]:
        def interaction(cursor: Any) -> int:
            cursor.execute("DELETE FROM console_tokens WHERE expires_at <= ?", (now,))
            count = int(cursor.rowcount)
            cursor.execute(
                "DELETE FROM revocations WHERE at <= ?", (now - REVOCATION_RETENTION,)
            )
            cursor.execute(
                "DELETE FROM proxy_report_sessions WHERE node IN"
                " (SELECT node FROM proxy_reports WHERE expires_at <= ?)",
                (now,),
            )
            cursor.execute("DELETE FROM proxy_reports WHERE expires_at <= ?", (now,))
            return count

        return self._pool.runInteraction(interaction)

    def close(self) -> Deferred[None]:
        self._pool.close()
        return succeed(None)
