"""
Token stores: where minted tokens live until they expire or are revoked,
with the revocation feed and the open-console registry beside them.

A store only ever sees a token's SHA-256 (L{TokenRecord.token_hash}), so a
leaked database or Redis dump opens no console. Time is always passed in
(C{now}) rather than read here, so expiry is tested with a
L{twisted.internet.task.Clock} and the same answer holds on every node.

Backends: L{MemoryTokenStore} here, L{txvnc.consoleauth.sqlite} (the
default) and L{txvnc.consoleauth.redis}; all pass the one contract suite in
C{tests/consoleauth/test_store.py}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from txvnc.consoleauth.sessions import (
    REVOCATION_MAX_ENTRIES,
    REVOCATION_RETENTION,
    Revocation,
    SessionRecord,
)
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
        Never consumes a single-use token.
        """

    def use(token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        """
        Like L{get}, for a console about to open: a single-use record is
        removed in the same atomic step that returns it, so of any number
        of concurrent callers, on any number of nodes, exactly one gets it.
        """

    def list_tokens(
        instance_uuid: str | None, now: float
    ) -> Deferred[list[TokenRecord]]:
        """
        The live records, of one instance or of all, oldest first.
        """

    def remove(token_hash: str) -> Deferred[bool]:
        """
        Forget one token; fires with whether it existed.
        """

    def remove_instance(instance_uuid: str) -> Deferred[int]:
        """
        Forget every token of an instance; fires with how many there were.
        """

    def add_revocation(kind: str, value: str, now: float) -> Deferred[int]:
        """
        Append to the revocation feed; fires with the entry's number, larger
        than every number before it.
        """

    def revocations(after: int) -> Deferred[tuple[int, list[Revocation]]]:
        """
        The feed's latest number and its entries numbered above C{after},
        oldest first.
        """

    def revocation_cursor() -> Deferred[int]:
        """
        The feed's latest number (0 before the first entry).
        """

    def put_sessions(
        node: str, sessions: list[SessionRecord], now: float, ttl: float
    ) -> Deferred[None]:
        """
        Replace what proxy C{node} reported; it is forgotten C{ttl} seconds
        after C{now} unless reported again (a dead proxy's consoles vanish).
        """

    def sessions(now: float) -> Deferred[list[SessionRecord]]:
        """
        Every console reported by a proxy whose report is still live.
        """

    def purge(now: float) -> Deferred[int]:
        """
        Drop records that expired before C{now}; fires with how many tokens.
        """

    def close() -> Deferred[None]:
        """
        Release connections; the store is unusable afterwards.
        """


class StoreUnavailable(Exception):
    """
    The store could not be reached (Redis down, connection lost): an
    operational condition the API answers with 503, not a bug.
    """


class UnknownStore(ValueError):
    """
    A C{--store} description that names no backend.
    """


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
        self._nodes: dict[str, tuple[float, list[SessionRecord]]] = {}

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
        self._nodes[node] = (now + ttl, list(sessions))
        return succeed(None)

    def sessions(self, now: float) -> Deferred[list[SessionRecord]]:
        return succeed(
            [
                s
                for node in sorted(self._nodes)
                for s in self._nodes[node][1]
                if self._nodes[node][0] > now
            ]
        )

    def purge(self, now: float) -> Deferred[int]:
        doomed = [h for h, r in self._records.items() if not r.is_live(now)]
        for h in doomed:
            del self._records[h]
        self._feed = [r for r in self._feed if r.at > now - REVOCATION_RETENTION]
        for node in [n for n, (until, _) in self._nodes.items() if until <= now]:
            del self._nodes[node]
        return succeed(len(doomed))

    def close(self) -> Deferred[None]:
        return succeed(None)


#: URL schemes of a Redis store: plain TCP, and TLS.
REDIS_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    password: str | None
    #: rediss://: TLS to the server, its certificate checked.
    tls: bool = False


def parse_redis_url(url: str) -> RedisAddress:
    """
    The parts of C{redis://[:PASSWORD@]HOST[:PORT][/DB]}, or of the same
    with C{rediss://} (TLS).

    @raise UnknownStore: naming what is wrong (never the password).
    """
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        raise UnknownStore("redis store: the port must be a number") from None
    if parts.scheme not in REDIS_SCHEMES or not parts.hostname:
        raise UnknownStore("redis store: use redis://HOST:PORT/DB or rediss://")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise UnknownStore("redis store: the database must be a number (/0)")
    if parts.query or parts.fragment:
        raise UnknownStore("redis store: no query or fragment is understood")
    password = unquote(parts.password) if parts.password else None
    return RedisAddress(
        parts.hostname, port, int(path), password, tls=parts.scheme == "rediss"
    )


def redact_store_description(description: str) -> str:
    """
    A C{--store} value fit for a log line: a Redis password becomes C{***}.
    """
    parts = urlsplit(description)
    if parts.scheme in REDIS_SCHEMES and parts.password:
        host = parts.hostname or ""
        netloc = f":***@{host}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return description


STORE_FORMS = "memory:, sqlite:PATH or redis://HOST:PORT/DB (rediss:// for TLS)"


def parse_store_description(description: str) -> tuple[str, str]:
    """
    (kind, argument) of a C{--store} value, checked without opening anything.

    @raise UnknownStore: for anything but the forms in L{STORE_FORMS}.
    """
    kind, sep, rest = description.partition(":")
    if sep and ((kind == "memory" and not rest) or (kind == "sqlite" and rest)):
        return kind, rest
    if kind in REDIS_SCHEMES and rest.startswith("//"):
        parse_redis_url(description)
        return "redis", description
    raise UnknownStore(f"unknown token store {description!r}: use {STORE_FORMS}")


def store_from_string(description: str, redis_ca: str | None = None) -> ITokenStore:
    """
    Build a store from a C{--store} value; C{redis_ca} is the PEM file a
    C{rediss://} server's certificate must chain to (default: the system's
    CAs).

    @raise UnknownStore: for anything else, with the accepted forms.
    """
    kind, argument = parse_store_description(description)
    if kind == "memory":
        return MemoryTokenStore()
    if kind == "redis":
        from txvnc.consoleauth.redis import RedisTokenStore

        return RedisTokenStore.from_url(argument, ca_file=redis_ca)
    from txvnc.consoleauth.sqlite import SQLiteTokenStore

    return SQLiteTokenStore(argument)


def __getattr__(name: str) -> Any:
    # SQLiteTokenStore lived here before the stores had modules of their own.
    if name == "SQLiteTokenStore":
        from txvnc.consoleauth.sqlite import SQLiteTokenStore

        return SQLiteTokenStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
