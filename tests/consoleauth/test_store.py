"""
The token store contract, run against every store: memory, SQLite and a real
Redis.
"""

import sqlite3

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults
from zope.interface.verify import verifyObject

from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.redis import RedisTokenStore, parse_redis_url
from txvnc.consoleauth.sessions import SessionRecord
from txvnc.consoleauth.sqlite import SQLiteTokenStore
from txvnc.consoleauth.store import ITokenStore, UnknownStore
from txvnc.consoleauth.stores import redact_store_description, store_from_string
from txvnc.consoleauth.tokens import TokenRecord
from txvnc.core.digest import digest_of
from txvnc.core.tokens import token_hash


def record(name, instance="i-1", created=100.0, ttl=600.0, single_use=False):
    return TokenRecord(
        token_hash=token_hash(name),
        host="10.0.0.6",
        port=5900,
        instance_uuid=instance,
        console_type="novnc",
        created_at=created,
        expires_at=created + ttl,
        single_use=single_use,
    )


def session(sid, node="proxy-a", instance="i-1", name="t1"):
    return SessionRecord(
        id=sid,
        node=node,
        instance_uuid=instance,
        token_hash=token_hash(name),
        client="192.0.2.1:5555",
        host="10.0.0.6",
        port=5900,
        opened_at=100.0,
        bytes_to_vnc=10,
        bytes_from_vnc=20,
    )


def make_store(kind, tmp_path, redis_url):
    if kind == "memory":
        return MemoryTokenStore()
    if kind == "sqlite":
        return SQLiteTokenStore(str(tmp_path / "tokens.sqlite"))
    return RedisTokenStore.from_url(redis_url)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def kind(request):
    return request.param


@pytest.fixture
def store(kind, tmp_path, redis_url):
    s = make_store(kind, tmp_path, redis_url)
    yield s
    pytest_twisted.blockon(s.close())


@pytest.fixture
def twin(kind, store, tmp_path, redis_url):
    """A second handle on the same data (a second node), where there can be one."""
    if kind == "memory":
        yield store
        return
    s = make_store(kind, tmp_path, redis_url)
    yield s
    pytest_twisted.blockon(s.close())


def test_provides_interface(store):
    """Every store provides ITokenStore."""
    assert verifyObject(ITokenStore, store)


@pytest_twisted.ensureDeferred
async def test_add_then_get(store):
    """A stored token is found by its hash with everything it grants."""
    r = record("t1")
    await store.add(r)
    assert await store.get(r.token_hash, now=101.0) == r


@pytest_twisted.ensureDeferred
async def test_unknown_and_expired_look_the_same(store):
    """An expired token reads as absent, exactly like an unknown one."""
    r = record("t1", ttl=10)
    await store.add(r)
    assert await store.get(r.token_hash, now=109.9) == r
    assert await store.get(r.token_hash, now=110.0) is None
    assert await store.get(token_hash("never"), now=100.0) is None
    assert await store.use(r.token_hash, now=110.0) is None


@pytest_twisted.ensureDeferred
async def test_remove(store):
    """Removing a token reports whether it existed and forgets it."""
    r = record("t1")
    await store.add(r)
    assert await store.remove(r.token_hash) is True
    assert await store.remove(r.token_hash) is False
    assert await store.get(r.token_hash, now=101.0) is None
    assert await store.list_tokens(None, now=101.0) == []


@pytest_twisted.ensureDeferred
async def test_remove_instance(store):
    """Revoking an instance removes its tokens and no one else's."""
    mine = [record("a", "i-1"), record("b", "i-1")]
    theirs = record("c", "i-2")
    for r in [*mine, theirs]:
        await store.add(r)
    assert await store.remove_instance("i-1") == 2
    for r in mine:
        assert await store.get(r.token_hash, now=101.0) is None
    assert await store.get(theirs.token_hash, now=101.0) == theirs
    assert await store.remove_instance("i-1") == 0
    assert await store.list_tokens(None, now=101.0) == [theirs]


@pytest_twisted.ensureDeferred
async def test_purge_drops_only_expired(store):
    """Purging deletes expired records and keeps live ones."""
    old = record("old", ttl=10)
    new = record("new", ttl=1000)
    await store.add(old)
    await store.add(new)
    assert await store.purge(now=500.0) == 1
    assert await store.get(new.token_hash, now=500.0) == new
    assert await store.purge(now=500.0) == 0


@pytest_twisted.ensureDeferred
async def test_use_keeps_a_reusable_token(store):
    """Using an ordinary token leaves it in place for the next console."""
    r = record("t1")
    await store.add(r)
    assert await store.use(r.token_hash, now=101.0) == r
    assert await store.use(r.token_hash, now=102.0) == r


@pytest_twisted.ensureDeferred
async def test_use_consumes_a_single_use_token(store):
    """A single-use token is handed out once; checking it first does not use it."""
    r = record("once", single_use=True)
    await store.add(r)
    assert await store.get(r.token_hash, now=101.0) == r
    assert await store.use(r.token_hash, now=101.0) == r
    assert await store.use(r.token_hash, now=101.0) is None
    assert await store.get(r.token_hash, now=101.0) is None
    assert await store.list_tokens("i-1", now=101.0) == []


@pytest_twisted.ensureDeferred
async def test_single_use_race_has_one_winner(store, twin):
    """Twenty concurrent uses of one single-use token, from two handles, yield one record."""
    r = record("raced", single_use=True)
    await store.add(r)
    results = await gatherResults(
        [(store if i % 2 else twin).use(r.token_hash, now=101.0) for i in range(20)]
    )
    assert [x for x in results if x is not None] == [r]


@pytest_twisted.ensureDeferred
async def test_list_by_instance(store):
    """Listing shows live tokens of one instance, or of all, oldest first."""
    a = record("a", "i-1", created=100.0)
    b = record("b", "i-1", created=101.0)
    c = record("c", "i-2", created=102.0)
    dead = record("d", "i-1", created=0.0, ttl=5)
    for r in [c, b, a, dead]:
        await store.add(r)
    assert await store.list_tokens("i-1", now=103.0) == [a, b]
    assert await store.list_tokens(None, now=103.0) == [a, b, c]
    assert await store.list_tokens("i-9", now=103.0) == []


@pytest_twisted.ensureDeferred
async def test_revocation_feed(store, twin):
    """Revocations are numbered in order and read back after a cursor, from any node."""
    assert await store.revocations(0) == (0, [])
    assert await store.revocation_cursor() == 0
    first = await store.add_revocation("token", "h1", now=100.0)
    second = await twin.add_revocation("instance", "i-1", now=101.0)
    assert second > first > 0
    latest, entries = await twin.revocations(0)
    assert latest == second
    assert [(e.seq, e.kind, e.value) for e in entries] == [
        (first, "token", "h1"),
        (second, "instance", "i-1"),
    ]
    latest, entries = await store.revocations(first)
    assert [e.value for e in entries] == ["i-1"]
    assert await store.revocations(second) == (second, [])
    assert await store.revocation_cursor() == second


@pytest_twisted.ensureDeferred
async def test_sessions_replace_and_expire(store, twin):
    """A proxy's report replaces its last one, joins other proxies', and lapses after its ttl."""
    await store.put_sessions("proxy-a", [session("s1"), session("s2")], 100.0, 30.0)
    await twin.put_sessions("proxy-b", [session("s3", node="proxy-b")], 100.0, 60.0)
    assert {s.id for s in await twin.sessions(now=110.0)} == {"s1", "s2", "s3"}
    await store.put_sessions("proxy-a", [session("s2")], 110.0, 30.0)
    found = await store.sessions(now=120.0)
    assert sorted(s.id for s in found) == ["s2", "s3"]
    assert session("s2") in found
    assert [s.id for s in await store.sessions(now=145.0)] == ["s3"]


@pytest_twisted.ensureDeferred
async def test_session_changes_apply_to_the_last_report_with_its_digest(store, twin):
    """
    A proxy's changes (added consoles, removed ids) apply to what it last
    reported, renew it, and answer the digest of what is held now, the
    same digest the proxy computes; with no live report there is nothing
    to change and the answer is None.
    """
    assert await store.update_sessions("proxy-a", [session("s1")], [], 100.0, 30.0) is None
    assert await store.sessions(now=100.0) == []
    await store.put_sessions("proxy-a", [session("s1"), session("s2")], 100.0, 30.0)
    await twin.put_sessions("proxy-b", [session("s9", node="proxy-b")], 100.0, 200.0)
    digest = await twin.update_sessions(
        "proxy-a", [session("s3"), session("s4")], ["s1", "no-such"], 120.0, 30.0
    )
    assert digest == digest_of(["s2", "s3", "s4"])
    found = await store.sessions(now=145.0)  # renewed at 120 for 30 s
    assert sorted(s.id for s in found) == ["s2", "s3", "s4", "s9"]
    assert session("s3") in found
    # Sending a console again changes nothing; an empty change only renews.
    assert await store.update_sessions("proxy-a", [session("s3")], [], 140.0, 30.0) == digest
    assert await store.update_sessions("proxy-a", [], [], 160.0, 30.0) == digest
    assert await store.update_sessions("proxy-a", [], ["s2", "s3", "s4"], 161.0, 30.0) == digest_of([])
    assert [s.id for s in await store.sessions(now=170.0)] == ["s9"]
    assert await store.update_sessions("proxy-a", [session("s5")], [], 170.0, 30.0) == digest_of(["s5"])
    assert await store.update_sessions("proxy-a", [], [], 205.0, 30.0) is None  # lapsed at 200


@pytest_twisted.ensureDeferred
async def test_shared_tokens_between_nodes(kind, store, twin):
    """A token minted through one handle is seen and revoked through another."""
    if kind == "memory":
        pytest.skip("a memory store has no second node")
    r = record("shared")
    await store.add(r)
    assert await twin.get(r.token_hash, now=101.0) == r
    assert await twin.remove(r.token_hash) is True
    assert await store.get(r.token_hash, now=101.0) is None


@pytest_twisted.ensureDeferred
async def test_redis_expires_tokens_itself(redis_url):
    """A Redis token key carries the token's lifetime as Redis's own expiry."""
    store = RedisTokenStore.from_url(redis_url)
    try:
        r = record("ttl", ttl=120.0)
        await store.add(r)
        key = store.prefix + "tok:" + r.token_hash
        pttl = await store._redis.execute_command("PTTL", key)
        assert 110_000 < int(pttl) <= 120_000
        instance_pttl = await store._redis.execute_command(
            "PTTL", store.prefix + "inst:i-1"
        )
        assert 110_000 < int(instance_pttl) <= 120_000
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_survives_reopen_and_holds_no_token(tmp_path):
    """Tokens persist across store instances and the file holds only hashes."""
    path = str(tmp_path / "tokens.sqlite")
    first = SQLiteTokenStore(path)
    r = record("the-secret-token")
    await first.add(r)
    await first.close()

    second = SQLiteTokenStore(path)
    try:
        assert await second.get(r.token_hash, now=101.0) == r
    finally:
        await second.close()

    db = sqlite3.connect(path)
    dump = "\n".join(db.iterdump())
    db.close()
    assert r.token_hash in dump
    assert "the-secret-token" not in dump


def test_store_from_string(tmp_path):
    """--store accepts memory:, sqlite:PATH and redis:// and names the forms otherwise."""
    assert isinstance(store_from_string("memory:"), MemoryTokenStore)
    s = store_from_string(f"sqlite:{tmp_path}/x.sqlite")
    assert isinstance(s, SQLiteTokenStore)
    s.close()
    for bad in ["", "memory", "sqlite:", "redis:x", "mysql:x"]:
        with pytest.raises(
            UnknownStore, match=r"memory:, sqlite:PATH or redis://.*rediss://"
        ):
            store_from_string(bad)


def test_redis_urls():
    """Redis URLs give host, port, database and password; bad ones say what is wrong."""
    a = parse_redis_url("redis://:s3cret@10.1.2.3:6380/4")
    assert (a.host, a.port, a.db, a.password) == ("10.1.2.3", 6380, 4, "s3cret")
    b = parse_redis_url("redis://cache")
    assert (b.host, b.port, b.db, b.password) == ("cache", 6379, 0, None)
    for bad, why in [
        ("redis://h:x/0", "port"),
        ("redis://h/zero", "database"),
        ("redis://h/0?x=1", "query"),
    ]:
        with pytest.raises(UnknownStore, match=why):
            parse_redis_url(bad)
    redacted = redact_store_description("redis://:s3cret@h:6380/1")
    assert "s3cret" not in redacted and "h:6380/1" in redacted
    assert not a.tls
    c = parse_redis_url("rediss://:s3cret@cache.example:6390/2")
    assert (c.host, c.port, c.db, c.password, c.tls) == (
        "cache.example",
        6390,
        2,
        "s3cret",
        True,
    )
    redacted = redact_store_description("rediss://:s3cret@h:6390/1")
    assert (
        "s3cret" not in redacted
        and redacted.startswith("rediss://")
        and "h:6390/1" in redacted
    )


@pytest_twisted.ensureDeferred
async def test_redis_away_is_store_unavailable(tmp_path):
    """With no Redis to reach, store calls fail with StoreUnavailable, which the API answers 503."""
    from tests.support.processes import free_port
    from txvnc.consoleauth.store import StoreUnavailable

    store = RedisTokenStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    store.timeout = 0.5
    try:
        with pytest.raises(StoreUnavailable):
            await store.remove("x")
    finally:
        await store.close()


@pytest.fixture(scope="module")
def redis_tls(tmp_path_factory):
    """A redis-server that speaks TLS only, and the PKI of its certificate."""
    from tests.rfb.pki import make_pki
    from tests.support.redis_server import RedisServer

    pki = make_pki(tmp_path_factory.mktemp("redis-pki"))
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=pki)
    yield server, pki
    server.stop()


@pytest_twisted.ensureDeferred
async def test_rediss_store_over_tls(redis_tls):
    """A rediss:// store checks the server's certificate against --redis-ca and keeps tokens there like a plain one."""
    server, pki = redis_tls
    store = store_from_string(server.url(5), redis_ca=str(pki.ca_cert))
    try:
        record = TokenRecord(
            token_hash=token_hash("tls-token"),
            host="127.0.0.1",
            port=5900,
            instance_uuid="inst-tls",
            console_type="novnc",
            created_at=1_000_000_000.0,
            expires_at=4_000_000_000.0,
        )
        assert await store.tls_checked is None
        await store.add(record)
        got = await store.get(record.token_hash, 1_000_000_000.0)
        assert got is not None and got.instance_uuid == "inst-tls"
    finally:
        await store.close()


@pytest.mark.parametrize("how", ["other CA", "no TLS"])
@pytest_twisted.ensureDeferred
async def test_rediss_refuses_what_it_cannot_trust(redis_tls, how):
    """A certificate from another CA, or a plain redis:// client on the TLS port, is Redis being unavailable (503), never a silent plain-text session."""
    from txvnc.consoleauth.store import StoreUnavailable

    server, pki = redis_tls
    if how == "other CA":
        store = store_from_string(server.url(6), redis_ca=str(pki.other_ca_cert))
    else:
        store = store_from_string(server.url(6).replace("rediss://", "redis://"))
    store.timeout = 2.0
    try:
        if how == "other CA":
            # Said once at start-up, in words an operator can act on.
            assert "certificate verify failed" in await store.tls_checked
        with pytest.raises(StoreUnavailable):
            await store.remove("x")
    finally:
        await store.close()
