"""
The nova store (C{--store nova:URL}): the tokens nova itself mints, read
from a cell's database, so txvnc serves the consoles of an unchanged nova.

nova's C{ConsoleAuthToken.authorize} stores a token's SHA-256 (hex) in
C{console_auth_tokens.token_hash} with C{expires} in integer UTC seconds;
that hash is L{txvnc.core.tokens.token_hash}, so a token check is one
indexed read. A token counts only while its instance exists and is not
deleted (C{instances.deleted = 0}). nova's tokens can be used until they
expire, so L{NovaTokenStore.use} is L{NovaTokenStore.get}.

txvnc never writes nova's database: minting and revoking through the
token API are refused (L{ReadOnlyStore}); nova revokes by deleting rows
(C{clean_console_auths_for_instance}, when an instance is deleted or moves).
L{NovaTokenStore.watch} turns that into txvnc's revocation feed: every
second it looks again at the tokens it handed to proxies and at the
instances of the consoles proxies report, and a token gone before its
expiry, or an instance deleted, enters the feed, so every proxy following
this API closes those consoles with 4001. The feed and the proxies' console
reports themselves live in memory beside it (L{MemoryTokenStore}): each
cell's proxy runs its own API over the cell database, and each such API
watches that database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.novadb import NovaDatabase, ReadOnlyPool
from txvnc.consoleauth.sessions import Revocation, SessionRecord
from txvnc.consoleauth.store import ITokenStore, ReadOnlyStore, StoreUnavailable
from txvnc.consoleauth.tokens import TokenRecord

#: A token is no longer watched this many seconds before it expires: nova
#: purges expired tokens too, and a compute's clock may run ahead of ours;
#: a row gone this close to its expiry says nothing.
EXPIRY_MARGIN = 30.0
#: Hashes or uuids per C{IN (...)} query.
_CHUNK = 500
#: nova's console type for noVNC; the others are not VNC over WebSocket.
NOVNC = "novnc"


def _timestamp(value: Any) -> float | None:
    """
    POSIX seconds of a nova C{DateTime} column (naive UTC): a datetime
    from pymysql, text from SQLite.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).timestamp()
    return None


@implementer(ITokenStore)
class NovaTokenStore:
    """
    nova's tokens, read-only, with the revocation feed and console reports
    in memory.

    @param reactor: runs the queries' threads and times them out.
    @param timeout: seconds a query may take before the API answers 503.
    """

    log = Logger()

    def __init__(
        self,
        db: NovaDatabase,
        reactor: Any,
        timeout: float = 2.0,
        pool_size: int = 4,
    ) -> None:
        self.db = db
        self._pool = ReadOnlyPool(db, reactor, size=pool_size, timeout=timeout)
        self._local = MemoryTokenStore()
        p = db.placeholder
        self._get_sql = (
            "SELECT t.host, t.port, t.instance_uuid, t.console_type,"
            " t.created_at, t.expires, t.internal_access_path"
            " FROM console_auth_tokens t JOIN instances i"
            " ON i.uuid = t.instance_uuid"
            f" WHERE t.token_hash = {p} AND t.expires > {p} AND i.deleted = 0"
        )
        #: token hash -> (instance uuid, expiry) of tokens handed to a proxy.
        self._watched: dict[str, tuple[str | None, float]] = {}
        #: instances whose deletion is already in the feed.
        self._revoked_instances: set[str] = set()
        self._outage = False

    # -- reading tokens --------------------------------------------------

    def _record(self, token_hash: str, rows: list[Any]) -> TokenRecord | None:
        if not rows:
            return None
        host, port, instance_uuid, console_type, created, expires, path = rows[0]
        if console_type != NOVNC or not host or not port:
            return None
        if path:
            self.log.warn(
                "a nova token for instance {instance_uuid} names an internal "
                "access path, which txvnc does not support: refused",
                instance_uuid=instance_uuid,
            )
            return None
        expires_at = float(expires)
        created_at = _timestamp(created)
        return TokenRecord(
            token_hash=token_hash,
            host=str(host),
            port=int(port),
            instance_uuid=instance_uuid,
            console_type=NOVNC,
            created_at=created_at if created_at is not None else expires_at,
            expires_at=expires_at,
        )

    def get(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        # nova keeps expires in whole seconds and compares with its own
        # now (expires > now); so does this.
        d = self._pool.query(self._get_sql, (token_hash, int(now)))
        return d.addCallback(lambda rows: self._record(token_hash, rows))

    def use(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        def watch(record: TokenRecord | None) -> TokenRecord | None:
            if record is not None:
                self._watched[token_hash] = (record.instance_uuid, record.expires_at)
            return record

        return self.get(token_hash, now).addCallback(watch)

    def list_tokens(
        self, instance_uuid: str | None, now: float
    ) -> Deferred[list[TokenRecord]]:
        p = self.db.placeholder
        sql = (
            "SELECT t.token_hash, t.host, t.port, t.instance_uuid, t.console_type,"
            " t.created_at, t.expires, t.internal_access_path"
            " FROM console_auth_tokens t JOIN instances i"
            f" ON i.uuid = t.instance_uuid WHERE t.expires > {p} AND i.deleted = 0"
        )
        args: list[Any] = [int(now)]
        if instance_uuid is not None:
            sql += f" AND t.instance_uuid = {p}"
            args.append(instance_uuid)
        sql += " ORDER BY t.created_at, t.token_hash"

        def records(rows: list[Any]) -> list[TokenRecord]:
            found = [self._record(row[0], [row[1:]]) for row in rows]
            return [r for r in found if r is not None]

        return self._pool.query(sql, args).addCallback(records)

    # -- writing tokens: nova's business ---------------------------------

    def _refused(self, what: str) -> Deferred[Any]:
        return fail(
            ReadOnlyStore(f"{what}: tokens are nova's (nova get-vnc-console)")
        )

    def add(self, record: TokenRecord) -> Deferred[None]:
        return self._refused("cannot mint into nova's database")

    def remove(self, token_hash: str) -> Deferred[bool]:
        return self._refused("cannot delete from nova's database")

    def remove_instance(self, instance_uuid: str) -> Deferred[int]:
        return self._refused("cannot delete from nova's database")

    # -- the feed and the console reports, in memory ---------------------

    def add_revocation(self, kind: str, value: str, now: float) -> Deferred[int]:
        return self._local.add_revocation(kind, value, now)

    def revocations(self, after: int) -> Deferred[tuple[int, list[Revocation]]]:
        return self._local.revocations(after)

    def revocation_cursor(self) -> Deferred[int]:
        return self._local.revocation_cursor()

    def put_sessions(
        self, node: str, sessions: list[SessionRecord], now: float, ttl: float
    ) -> Deferred[None]:
        return self._local.put_sessions(node, sessions, now, ttl)

    def update_sessions(
        self,
        node: str,
        added: list[SessionRecord],
        removed: list[str],
        now: float,
        ttl: float,
    ) -> Deferred[str | None]:
        return self._local.update_sessions(node, added, removed, now, ttl)

    def sessions(self, now: float) -> Deferred[list[SessionRecord]]:
        return self._local.sessions(now)

    def purge(self, now: float) -> Deferred[int]:
        # nova purges its own tokens; only what is kept here.
        return self._local.purge(now)

    def close(self) -> Deferred[None]:
        self._pool.close()
        return succeed(None)

    # -- nova's revocations ----------------------------------------------

    async def watch(self, now: float) -> int:
        """
        One look at nova's database for tokens deleted before their expiry
        and for deleted instances, with open consoles; each enters the feed.
        Fires with how many entries were added (0 when the database cannot
        be reached: the next look tries again).
        """
        for token_hash, (_, expires_at) in list(self._watched.items()):
            if expires_at - EXPIRY_MARGIN <= now:
                del self._watched[token_hash]
        open_consoles = await self._local.sessions(now)
        instances = {s.instance_uuid for s in open_consoles if s.instance_uuid}
        instances.update(i for i, _ in self._watched.values() if i)
        self._revoked_instances &= instances
        try:
            gone = await self._missing(
                "SELECT token_hash FROM console_auth_tokens WHERE token_hash IN",
                sorted(self._watched),
            )
            deleted = await self._missing(
                "SELECT uuid FROM instances WHERE deleted = 0 AND uuid IN",
                sorted(instances - self._revoked_instances),
            )
        except StoreUnavailable as e:
            if not self._outage:
                self.log.error(
                    "cannot watch nova's tokens for revocations: {why}", why=str(e)
                )
            self._outage = True
            return 0
        if self._outage:
            self.log.info("watching nova's tokens for revocations again")
        self._outage = False
        for token_hash in gone:
            instance_uuid, _ = self._watched.pop(token_hash)
            self.log.info(
                "nova deleted a token of instance {instance_uuid}: closing its "
                "consoles",
                instance_uuid=instance_uuid,
            )
            await self._local.add_revocation("token", token_hash, now)
        for instance_uuid in deleted:
            self._revoked_instances.add(instance_uuid)
            self.log.info(
                "instance {instance_uuid} is deleted in nova: closing its consoles",
                instance_uuid=instance_uuid,
            )
            await self._local.add_revocation("instance", instance_uuid, now)
        return len(gone) + len(deleted)

    async def _missing(self, select: str, values: list[str]) -> list[str]:
        """
        The C{values} that C{select ... IN (...)} does not find.
        """
        found: set[str] = set()
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            marks = ", ".join([self.db.placeholder] * len(chunk))
            rows = await self._pool.query(f"{select} ({marks})", chunk)
            found.update(str(row[0]) for row in rows)
        return [v for v in values if v not in found]
