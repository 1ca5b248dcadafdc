"""
Token stores: where minted tokens live until they expire or are revoked.

A store only ever sees a token's SHA-256 (L{TokenRecord.token_hash}), so a
leaked database or Redis dump opens no console. Time is always passed in
(C{now}) rather than read here, so expiry is tested with a
L{twisted.internet.task.Clock} and the same answer holds on every node.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import Interface, implementer

from txvnc.consoleauth.tokens import TokenRecord


class ITokenStore(Interface):
    """
    The storage contract every backend meets; the shared contract tests in
    C{tests/consoleauth/test_store.py} run against each implementation.
    """

    def add(record: TokenRecord) -> Deferred[None]:
        """
        Remember C{record} until it expires or is removed.
        """

    def get(token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        """
        The live record for C{token_hash}, or L{None} when it is unknown or
        expired at C{now} (callers cannot tell the two apart, by design).
        """

    def remove(token_hash: str) -> Deferred[bool]:
        """
        Forget one token; fires with whether it existed.
        """

    def remove_instance(instance_uuid: str) -> Deferred[int]:
        """
        Forget every token of an instance; fires with how many there were.
        """

    def purge(now: float) -> Deferred[int]:
        """
        Drop records that expired before C{now}; fires with how many.
        """

    def close() -> Deferred[None]:
        """
        Release connections; the store is unusable afterwards.
        """


class UnknownStore(ValueError):
    """
    A C{--store} description that names no backend.
    """


@implementer(ITokenStore)
class MemoryTokenStore:
    """
    A throwaway store for tests and single-process demos: tokens die with the
    process.
    """

    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}

    def add(self, record: TokenRecord) -> Deferred[None]:
        self._records[record.token_hash] = record
        return succeed(None)

    def get(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        record = self._records.get(token_hash)
        if record is not None and not record.is_live(now):
            record = None
        return succeed(record)

    def remove(self, token_hash: str) -> Deferred[bool]:
        return succeed(self._records.pop(token_hash, None) is not None)

    def remove_instance(self, instance_uuid: str) -> Deferred[int]:
        doomed = [
            h for h, r in self._records.items() if r.instance_uuid == instance_uuid
        ]
        for h in doomed:
            del self._records[h]
        return succeed(len(doomed))

    def purge(self, now: float) -> Deferred[int]:
        doomed = [h for h, r in self._records.items() if not r.is_live(now)]
        for h in doomed:
            del self._records[h]
        return succeed(len(doomed))

    def close(self) -> Deferred[None]:
        return succeed(None)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_hash    TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    port          INTEGER NOT NULL,
    instance_uuid TEXT,
    console_type  TEXT NOT NULL,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    options       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS tokens_by_instance ON tokens (instance_uuid);
CREATE INDEX IF NOT EXISTS tokens_by_expiry ON tokens (expires_at);
"""

_COLUMNS = (
    "token_hash, host, port, instance_uuid, console_type, created_at, expires_at,"
    " options"
)


def _open_connection(connection: sqlite3.Connection) -> None:
    # WAL lets the purge run beside token checks; a short busy timeout covers
    # a second process (a restart overlapping the old one) on the same file.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA busy_timeout=5000")
    connection.executescript(_SCHEMA)
    columns = {row[1] for row in connection.execute("PRAGMA table_info(tokens)")}
    if "options" not in columns:  # a store made before token options existed
        connection.execute(
            "ALTER TABLE tokens ADD COLUMN options TEXT NOT NULL DEFAULT '{}'"
        )


def _row_to_record(row: Any) -> TokenRecord:
    return TokenRecord(
        token_hash=row[0],
        host=row[1],
        port=int(row[2]),
        instance_uuid=row[3],
        console_type=row[4],
        created_at=float(row[5]),
        expires_at=float(row[6]),
        options=json.loads(row[7]),
    )


@implementer(ITokenStore)
class SQLiteTokenStore:
    """
    The default store: one SQLite file, so tokens survive a restart.

    Queries run in a one-thread L{adbapi.ConnectionPool}: a slow disk delays
    a token check, never the reactor that relays every open console.
    """

    _log = Logger()

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
            f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.token_hash,
                record.host,
                record.port,
                record.instance_uuid,
                record.console_type,
                record.created_at,
                record.expires_at,
                json.dumps(record.options),
            ),
        )

    def get(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        d = self._pool.runQuery(
            f"SELECT {_COLUMNS} FROM tokens WHERE token_hash = ? AND expires_at > ?",
            (token_hash, now),
        )
        d.addCallback(lambda rows: _row_to_record(rows[0]) if rows else None)
        return d

    def _delete(self, sql: str, args: tuple[Any, ...]) -> Deferred[int]:
        def interaction(cursor: Any) -> int:
            cursor.execute(sql, args)
            return int(cursor.rowcount)

        return self._pool.runInteraction(interaction)

    def remove(self, token_hash: str) -> Deferred[bool]:
        d = self._delete("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))
        return d.addCallback(lambda count: count > 0)

    def remove_instance(self, instance_uuid: str) -> Deferred[int]:
        return self._delete(
            "DELETE FROM tokens WHERE instance_uuid = ?", (instance_uuid,)
        )

    def purge(self, now: float) -> Deferred[int]:
        return self._delete("DELETE FROM tokens WHERE expires_at <= ?", (now,))

    def close(self) -> Deferred[None]:
        self._pool.close()
        return succeed(None)


def parse_store_description(description: str) -> tuple[str, str]:
    """
    (kind, argument) of a C{--store} value, checked without opening anything.

    @raise UnknownStore: for anything but C{memory:} or C{sqlite:PATH}.
    """
    kind, sep, rest = description.partition(":")
    if sep and ((kind == "memory" and not rest) or (kind == "sqlite" and rest)):
        return kind, rest
    raise UnknownStore(
        f"unknown token store {description!r}: use memory: or sqlite:PATH"
    )


def store_from_string(description: str) -> ITokenStore:
    """
    Build a store from a C{--store} value: C{memory:} or C{sqlite:PATH}.

    @raise UnknownStore: for anything else, with the accepted forms.
    """
    kind, argument = parse_store_description(description)
    if kind == "memory":
        return MemoryTokenStore()
    return SQLiteTokenStore(argument)
