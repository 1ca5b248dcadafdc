"""
The Redis store (C{--store redis://HOST:PORT/DB}): every API process that
points at one Redis sees the same tokens, revocations and consoles.

Tokens are Redis keys with Redis's own expiry (C{PX}), so a token is gone
from every node at the same moment without a purge. Each operation that
touches more than one key is one Lua script, which Redis runs atomically:
that is what makes L{RedisTokenStore.use} hand a single-use token to exactly
one of any number of racing proxies.

Keys (all under the prefix, C{txvnc:} by default)::

    tok:HASH         the token record (JSON), expiring with the token
    inst:UUID        set of the instance's token hashes, expiring with the last
    tokens           sorted set HASH -> expires_at, for listing and purge
    rev:seq, rev     the revocation feed: a counter and a sorted set by number
    node:NAME        a proxy's console report (JSON), expiring unless renewed
    nodes            sorted set NAME -> expires_at
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import txredisapi  # type: ignore[import-untyped]
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txvnc.consoleauth import redisreports
from txvnc.consoleauth.sessions import (
    REVOCATION_MAX_ENTRIES,
    Revocation,
    SessionRecord,
    session_from_json,
    session_to_json,
    sessions_from_json,
)
from txvnc.consoleauth.store import ITokenStore, StoreUnavailable, UnknownStore
from txvnc.consoleauth.tokens import TokenRecord
from txvnc.core.digest import RunningDigest, digest_term, format_digest
from txvnc.core.pem import load_ca

DEFAULT_PREFIX = "txvnc:"

_ADD = """
local p, h = ARGV[1], ARGV[2]
redis.call('SET', p..'tok:'..h, ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', p..'tokens', ARGV[6], h)
if ARGV[5] ~= '' then
  local k = p..'inst:'..ARGV[5]
  redis.call('SADD', k, h)
  if redis.call('PTTL', k) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', k, ARGV[4])
  end
end
return 1
"""

_FORGET = """
local function forget(p, h, r)
  redis.call('DEL', p..'tok:'..h)
  redis.call('ZREM', p..'tokens', h)
  if type(r.instance_uuid) == 'string' then
    redis.call('SREM', p..'inst:'..r.instance_uuid, h)
  end
end
"""

_USE = (
    _FORGET
    + """
local p, h = ARGV[1], ARGV[2]
local v = redis.call('GET', p..'tok:'..h)
if not v then return false end
local r = cjson.decode(v)
if tonumber(r.expires_at) <= tonumber(ARGV[3]) then return false end
if r.single_use then forget(p, h, r) end
return v
"""
)

_REMOVE = (
    _FORGET
    + """
local p, h = ARGV[1], ARGV[2]
local v = redis.call('GET', p..'tok:'..h)
redis.call('ZREM', p..'tokens', h)
if not v then return 0 end
forget(p, h, cjson.decode(v))
return 1
"""
)

_REMOVE_INSTANCE = """
local p = ARGV[1]
local k = p..'inst:'..ARGV[2]
local n = 0
for _, h in ipairs(redis.call('SMEMBERS', k)) do
  n = n + redis.call('DEL', p..'tok:'..h)
  redis.call('ZREM', p..'tokens', h)
end
redis.call('DEL', k)
return n
"""

_LIST = """
local p = ARGV[1]
local hs
if ARGV[2] ~= '' then
  hs = redis.call('SMEMBERS', p..'inst:'..ARGV[2])
else
  hs = redis.call('ZRANGE', p..'tokens', 0, -1)
end
local out = {}
for _, h in ipairs(hs) do
  local v = redis.call('GET', p..'tok:'..h)
  if v then table.insert(out, v) end
end
return out
"""

_ADD_REVOCATION = """
local p = ARGV[1]
local seq = redis.call('INCR', p..'rev:seq')
local entry = cjson.encode({seq = seq, kind = ARGV[2], value = ARGV[3], at = ARGV[4]})
redis.call('ZADD', p..'rev', seq, entry)
redis.call('ZREMRANGEBYSCORE', p..'rev', '-inf', seq - tonumber(ARGV[5]))
return seq
"""

_REVOCATIONS = """
local p = ARGV[1]
local latest = tonumber(redis.call('GET', p..'rev:seq') or '0')
local entries = redis.call('ZRANGEBYSCORE', p..'rev', '(' .. ARGV[2], '+inf')
table.insert(entries, 1, tostring(latest))
return entries
"""

_PURGE = """
local p = ARGV[1]
redis.call('ZREMRANGEBYSCORE', p..'nodes', '-inf', ARGV[2])
return redis.call('ZREMRANGEBYSCORE', p..'tokens', '-inf', ARGV[2])
"""


_log = Logger()


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


#: Seconds a Redis call may take, queueing for a connection included.
CALL_TIMEOUT = 5.0


def _unavailable(failure: Failure) -> Failure:
    # Lost or refused connections and timeouts are Redis being away; any
    # other error (a script bug, a wrong type) stays what it is.
    if failure.check(txredisapi.ConnectionError, defer.TimeoutError):
        raise StoreUnavailable(f"Redis: {failure.getErrorMessage() or 'timed out'}")
    return failure


def redis_tls_options(host: str, ca_file: str | None) -> Any:
    """
    Client TLS toward a Redis server: its certificate must chain to the PEM
    CA in C{ca_file} (or a system CA) and name C{host}.
    """
    return optionsForClientTLS(host, trustRoot=load_ca(ca_file))


@implementer(IHandshakeListener)
class _TLSProbe(Protocol):
    """Connects, completes the TLS handshake, hangs up."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()
        if not self.done.called:
            self.done.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.errback(reason)


def check_tls(
    reactor: Any, host: str, port: int, options: Any, timeout: float = CALL_TIMEOUT
) -> Deferred[str | None]:
    """
    One TLS handshake with the Redis at C{host:port}, logged: the pool's
    own connections only say "Lost connection" when the certificate is
    refused, which names neither TLS nor the reason. Fires with None, or
    with why it failed.
    """
    probe = _TLSProbe()
    endpoint = wrapClientTLS(
        options, HostnameEndpoint(reactor, host, port, timeout=timeout)
    )
    d: Deferred[Any] = endpoint.connect(Factory.forProtocol(lambda: probe))
    d.addCallback(lambda _: probe.done)
    d.addTimeout(timeout, reactor)

    def checked(_: object) -> None:
        _log.info(
            "TLS with Redis at {host}:{port}: certificate checked", host=host, port=port
        )

    def failed(failure: Failure) -> str:
        why = failure.getErrorMessage() or failure.type.__name__
        _log.error(
            "TLS with Redis at {host}:{port} failed: {why}",
            host=host,
            port=port,
            why=why,
        )
        return why

    return d.addCallbacks(checked, failed)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@implementer(ITokenStore)
class RedisTokenStore:
    """
    Tokens and the rest in one Redis database, over a small lazy pool of
    connections that reconnects by itself.
    """

    def __init__(
        self,
        redis: Any,
        prefix: str = DEFAULT_PREFIX,
        clock: IReactorTime | None = None,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._redis = redis
        self.prefix = prefix
        self._clock = clock
        self.timeout = timeout
        #: For rediss://, the start-up TLS check (L{check_tls}).
        self.tls_checked: Deferred[str | None] | None = None

    def _guard(self, d: Deferred[Any]) -> Deferred[Any]:
        """
        C{d} bounded in time, its connection failures as L{StoreUnavailable}.
        """
        if self._clock is not None:
            d.addTimeout(self.timeout, self._clock)
        return d.addErrback(_unavailable)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        clock: IReactorTime | None = None,
        ca_file: str | None = None,
    ) -> RedisTokenStore:
        """
        A store on the Redis that C{url} names; for C{rediss://}, over TLS
        with the server's certificate checked against C{ca_file} (PEM) or
        the system's CAs, and its name against the URL's host.
        """
        address = parse_redis_url(url)
        tls = redis_tls_options(address.host, ca_file) if address.tls else False
        redis = txredisapi.lazyConnectionPool(
            host=address.host,
            port=address.port,
            dbid=address.db,
            poolsize=4,
            password=address.password,
            connectTimeout=5,
            replyTimeout=5,
            convertNumbers=False,
            ssl_context_factory=tls,
        )
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        store = cls(redis, prefix, clock)
        if tls:
            store.tls_checked = check_tls(clock, address.host, address.port, tls)
        return store

    def _eval(self, script: str, *args: object) -> Deferred[Any]:
        d: Deferred[Any] = self._redis.eval(
            script, keys=[], args=[self.prefix, *(str(a) for a in args)]
        )
        return self._guard(d)

    def add(self, record: TokenRecord) -> Deferred[None]:
        d = self._eval(
            _ADD,
            record.token_hash,
            record.to_json(),
            _ms(record.expires_at - record.created_at),
            record.instance_uuid or "",
            repr(record.expires_at),
        )
        return d.addCallback(lambda _: None)

    def get(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        d: Deferred[Any] = self._redis.get(self.prefix + "tok:" + token_hash)
        self._guard(d)

        def live(value: str | None) -> TokenRecord | None:
            if value is None:
                return None
            record = TokenRecord.from_json(value)
            return record if record.is_live(now) else None

        return d.addCallback(live)

    def use(self, token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        d = self._eval(_USE, token_hash, repr(now))
        return d.addCallback(lambda v: TokenRecord.from_json(v) if v else None)

    def list_tokens(
        self, instance_uuid: str | None, now: float
    ) -> Deferred[list[TokenRecord]]:
        d = self._eval(_LIST, instance_uuid or "")

        def live(values: list[str] | None) -> list[TokenRecord]:
            records = [TokenRecord.from_json(v) for v in values or []]
            found = [r for r in records if r.is_live(now)]
            return sorted(found, key=lambda r: (r.created_at, r.token_hash))

        return d.addCallback(live)

    def remove(self, token_hash: str) -> Deferred[bool]:
        return self._eval(_REMOVE, token_hash).addCallback(lambda n: int(n) > 0)

    def remove_instance(self, instance_uuid: str) -> Deferred[int]:
        return self._eval(_REMOVE_INSTANCE, instance_uuid).addCallback(int)

    def add_revocation(self, kind: str, value: str, now: float) -> Deferred[int]:
        d = self._eval(_ADD_REVOCATION, kind, value, repr(now), REVOCATION_MAX_ENTRIES)
        return d.addCallback(int)

    def revocations(self, after: int) -> Deferred[tuple[int, list[Revocation]]]:
        def parse(reply: list[str]) -> tuple[int, list[Revocation]]:
            latest, *entries = reply
            feed = []
            for text in entries:
                e = json.loads(text)
                feed.append(
                    Revocation(int(e["seq"]), e["kind"], e["value"], float(e["at"]))
                )
            return int(latest), feed

        return self._eval(_REVOCATIONS, int(after)).addCallback(parse)

    def revocation_cursor(self) -> Deferred[int]:
        d: Deferred[Any] = self._redis.get(self.prefix + "rev:seq")
        self._guard(d)
        return d.addCallback(lambda v: int(v or 0))

    def put_sessions(
        self, node: str, sessions: list[SessionRecord], now: float, ttl: float
    ) -> Deferred[None]:
        rows = {s.id: session_to_json(s) for s in sessions}
        digest = RunningDigest()
        for session_id in rows:
            digest.add(session_id)
        flat = [x for pair in rows.items() for x in pair]
        d = self._eval(
            redisreports.PUT, node, _ms(ttl), repr(now + ttl),
            digest.count, digest.total, *flat,
        )  # fmt: skip
        return d.addCallback(lambda _: None)

    def update_sessions(
        self,
        node: str,
        added: list[SessionRecord],
        removed: list[str],
        now: float,
        ttl: float,
    ) -> Deferred[str | None]:
        args: list[object] = [node, repr(now), _ms(ttl), repr(now + ttl), len(removed)]
        for session_id in removed:
            args += [session_id, digest_term(session_id)]
        for s in added:
            args += [s.id, digest_term(s.id), session_to_json(s)]
        d = self._eval(redisreports.UPDATE, *args)
        return d.addCallback(
            lambda r: format_digest(int(r[0]), int(r[1])) if r else None
        )

    def sessions(self, now: float) -> Deferred[list[SessionRecord]]:
        def parse(values: list[str] | None) -> list[SessionRecord]:
            found = []
            for v in values or []:
                if v[:1] == "s":
                    found.append(session_from_json(v[1:]))
                else:
                    found.extend(sessions_from_json(v[1:]))
            return found

        return self._eval(redisreports.LIST, repr(now)).addCallback(parse)

    def purge(self, now: float) -> Deferred[int]:
        return self._eval(_PURGE, repr(now)).addCallback(int)

    def close(self) -> Deferred[None]:
        d: Deferred[Any] = self._redis.disconnect()
        return d.addCallback(lambda _: None)
