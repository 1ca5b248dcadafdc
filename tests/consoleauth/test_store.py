"""
The token store contract, run against every store.
"""

import sqlite3

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from txvnc.consoleauth.store import (
    ITokenStore,
    MemoryTokenStore,
    SQLiteTokenStore,
    UnknownStore,
    store_from_string,
)
from txvnc.consoleauth.tokens import TokenRecord, token_hash


def record(name, instance="i-1", created=100.0, ttl=600.0):
    return TokenRecord(
        token_hash=token_hash(name),
        host="10.0.0.6",
        port=5900,
        instance_uuid=instance,
        console_type="novnc",
        created_at=created,
        expires_at=created + ttl,
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        s = MemoryTokenStore()
    else:
        s = SQLiteTokenStore(str(tmp_path / "tokens.sqlite"))
    yield s
    s.close()


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


@pytest_twisted.ensureDeferred
async def test_remove(store):
    """Removing a token reports whether it existed and forgets it."""
    r = record("t1")
    await store.add(r)
    assert await store.remove(r.token_hash) is True
    assert await store.remove(r.token_hash) is False
    assert await store.get(r.token_hash, now=101.0) is None


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
    """--store accepts memory: and sqlite:PATH and names the forms otherwise."""
    assert isinstance(store_from_string("memory:"), MemoryTokenStore)
    s = store_from_string(f"sqlite:{tmp_path}/x.sqlite")
    assert isinstance(s, SQLiteTokenStore)
    s.close()
    for bad in ["", "memory", "sqlite:", "redis://localhost", "mysql:x"]:
        with pytest.raises(UnknownStore, match="memory: or sqlite:PATH"):
            store_from_string(bad)
