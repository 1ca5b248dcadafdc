"""
Reading a nova cell database: its C{[database] connection} URL and a small
pool of read-only connections that runs queries off the reactor thread.

nova names its database with an SQLAlchemy URL. Two forms are served:
C{mysql+pymysql://USER:PASS@HOST[:PORT]/DB[?charset=utf8&...]} (the
production form; plain C{mysql://} is read the same way, with pymysql) and
C{sqlite:///PATH} (a test cell, or a small all-in-one). SQLite files are
opened read-only (C{mode=ro}): txvnc never writes nova's database.

Why not L{twisted.enterprise.adbapi}: its reconnect logic logs a "Rollback
failed" traceback for every query that meets a database that went away,
and without it a broken connection is kept for good. A read-only store needs
no transactions, so each thread here keeps one connection, drops it on any
error (the next query opens a new one) and the caller gets one
L{StoreUnavailable} line instead.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from txvnc.consoleauth.store import StoreUnavailable, UnknownStore

#: The URL schemes of nova's C{[database] connection} served here.
MYSQL_SCHEMES = ("mysql+pymysql", "mysql")
SQLITE_SCHEME = "sqlite"
#: Query parameters of a MySQL URL passed on to pymysql; others (SQLAlchemy's
#: own, such as C{plugin}) are ignored.
_MYSQL_PARAMETERS = ("charset", "unix_socket")


@dataclass(frozen=True)
class NovaDatabase:
    """
    Where a nova cell database is: C{kind} is C{sqlite} (C{path}) or
    C{mysql} (the rest).
    """

    kind: str
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 3306
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str = "nova"
    parameters: tuple[tuple[str, str], ...] = ()

    @property
    def placeholder(self) -> str:
        """
        The driver's query parameter mark.
        """
        return "?" if self.kind == SQLITE_SCHEME else "%s"


def parse_connection(url: str) -> NovaDatabase:
    """
    The database of a nova C{[database] connection} URL, checked without
    connecting.

    @raise UnknownStore: for any other form, naming the forms served.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == SQLITE_SCHEME:
        # sqlite:///relative.db, sqlite:////absolute/nova.sqlite
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if parts.netloc or not path:
            raise UnknownStore(f"nova database {redact_connection(url)!r}: no file")
        return NovaDatabase(kind=SQLITE_SCHEME, path=path)
    if scheme in MYSQL_SCHEMES:
        query = parse_qs(parts.query)
        try:
            port = parts.port or 3306
        except ValueError:
            raise UnknownStore("nova database URL: bad port") from None
        return NovaDatabase(
            kind="mysql",
            host=parts.hostname or "localhost",
            port=port,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            database=unquote(parts.path.lstrip("/")) or "nova",
            parameters=tuple(
                (name, query[name][-1]) for name in _MYSQL_PARAMETERS if name in query
            ),
        )
    raise UnknownStore(
        "nova database: use mysql+pymysql://USER:PASS@HOST/DB or sqlite:///PATH"
    )


def redact_connection(url: str) -> str:
    """
    A connection URL fit for a log line: its password becomes C{***}.
    """
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        return parts._replace(netloc=f"{user}:***@{netloc}").geturl()
    return url


def _connect(db: NovaDatabase, timeout: float) -> Any:
    if db.kind == SQLITE_SCHEME:
        uri = "file:" + quote(db.path) + "?mode=ro"
        return sqlite3.connect(
            uri, uri=True, timeout=timeout, check_same_thread=False
        )
    import pymysql  # type: ignore[import-untyped]  # only a MySQL cell loads it

    return pymysql.connect(
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password or "",
        database=db.database,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
        autocommit=True,
        **dict(db.parameters),
    )


class ReadOnlyPool:
    """
    At most C{size} threads, each with its own connection, for queries that
    only read. A query that does not answer within C{timeout} seconds
    fails with L{StoreUnavailable} (its thread finishes on its own: the
    drivers' own timeouts are the same).
    """

    def __init__(
        self,
        db: NovaDatabase,
        reactor: Any,
        size: int = 4,
        timeout: float = 2.0,
    ) -> None:
        self.db = db
        self.timeout = timeout
        self._reactor: IReactorThreads = reactor
        self._clock: IReactorTime = reactor
        self._threads = ThreadPool(1, size, name="txvnc-nova-db")
        self._local = threading.local()
        self._started = False

    def query(self, sql: str, args: Sequence[Any]) -> Deferred[list[Any]]:
        """
        The rows of C{sql} (with the driver's placeholders) for C{args}.
        """
        return self.run(lambda cursor: _fetch(cursor, sql, args))

    def run(self, work: Callable[[Any], Any]) -> Deferred[Any]:
        """
        C{work(cursor)} in a pool thread, its result on the reactor.
        """
        if not self._started:
            self._threads.start()
            self._started = True
        d = deferToThreadPool(self._reactor, self._threads, self._in_thread, work)
        d.addTimeout(self.timeout, self._clock)
        d.addErrback(self._unavailable)
        return d

    def _in_thread(self, work: Callable[[Any], Any]) -> Any:
        connection = getattr(self._local, "connection", None)
        try:
            if self.db.kind == SQLITE_SCHEME:
                # An open SQLite connection keeps reading a file that was
                # moved away or replaced: follow the path, as nova does.
                stat = os.stat(self.db.path)
                identity = (stat.st_dev, stat.st_ino)
                if connection is not None and self._local.identity != identity:
                    connection.close()
                    connection = None
                self._local.identity = identity
            if connection is None:
                connection = _connect(self.db, self.timeout)
                self._local.connection = connection
            cursor = connection.cursor()
            try:
                return work(cursor)
            finally:
                cursor.close()
        except Exception as e:
            self._local.connection = None
            if connection is not None:
                try:
                    connection.close()
                except Exception:
                    pass
            raise StoreUnavailable(f"nova database: {_why(e)}") from None

    def _unavailable(self, failure: Any) -> Any:
        if failure.check(TimeoutError):
            raise StoreUnavailable(
                f"nova database did not answer within {self.timeout:g}s"
            )
        return failure

    def close(self) -> None:
        if self._started:
            self._threads.stop()
            self._started = False


def _fetch(cursor: Any, sql: str, args: Sequence[Any]) -> list[Any]:
    cursor.execute(sql, tuple(args))
    return list(cursor.fetchall())


def _why(e: Exception) -> str:
    # pymysql's errors are (code, text); keep the text, never the URL.
    if len(e.args) == 2 and isinstance(e.args[0], int):
        return str(e.args[1])
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
