"""
The nova store over a SQLite cell database shaped like nova's (the two
tables it reads, the columns it reads). tests/nova runs the same store over
databases made by nova's own migrations and tokens minted by nova's code.
"""

import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from tests.support.novacell import CellDB
from txvnc.consoleauth.nova import EXPIRY_MARGIN, NovaTokenStore
from txvnc.consoleauth.novadb import parse_connection, redact_connection
from txvnc.consoleauth.sessions import SessionRecord
from txvnc.consoleauth.store import (
    ITokenStore,
    ReadOnlyStore,
    StoreUnavailable,
    UnknownStore,
)
from txvnc.consoleauth.stores import (
    parse_store_description,
    redact_store_description,
    store_from_string,
)
from txvnc.core.tokens import token_hash

NOW = 1_800_000_000.0


@pytest.fixture
def cell(tmp_path):
    return CellDB(str(tmp_path / "nova.sqlite"))


@pytest.fixture
def store(cell):
    s = NovaTokenStore(parse_connection(f"sqlite:///{cell.path}"), reactor)
    yield s
    pytest_twisted.blockon(s.close())


def test_provides_interface(store):
    assert verifyObject(ITokenStore, store)


def test_connection_urls():
    """nova's [database] connection forms, as nova.conf writes them."""
    mysql = parse_connection(
        "mysql+pymysql://nova:s%40cret@db.example:3307/nova_cell1?charset=utf8"
    )
    assert (mysql.kind, mysql.host, mysql.port, mysql.user) == (
        "mysql",
        "db.example",
        3307,
        "nova",
    )
    assert mysql.password == "s@cret" and mysql.database == "nova_cell1"
    assert mysql.parameters == (("charset", "utf8"),)
    assert "s@cret" not in repr(mysql)
    assert parse_connection("sqlite:////var/lib/nova/nova.sqlite").path == (
        "/var/lib/nova/nova.sqlite"
    )
    assert parse_connection("sqlite:///nova.sqlite").path == "nova.sqlite"
    for bad in ("postgresql://x/y", "sqlite://", "sqlite:///", "nova"):
        with pytest.raises(UnknownStore):
            parse_connection(bad)
    assert redact_connection("mysql+pymysql://nova:pw@db/nova") == (
        "mysql+pymysql://nova:***@db/nova"
    )


def test_store_description():
    """--store nova:URL is checked without connecting and redacted in logs."""
    url = "nova:mysql+pymysql://nova:pw@db/nova?charset=utf8"
    assert parse_store_description(url) == ("nova", url[5:])
    assert "pw" not in redact_store_description(url)
    with pytest.raises(UnknownStore):
        parse_store_description("nova:postgresql://db/nova")


@pytest_twisted.ensureDeferred
async def test_valid_token(cell, store):
    """A token nova minted is found by txvnc's hash of it, reusable."""
    instance = cell.add_instance()
    token = cell.mint(instance, host="192.0.2.7", port=5901, expires=NOW + 600)
    record = await store.get(token_hash(token), NOW)
    assert (record.host, record.port, record.instance_uuid) == (
        "192.0.2.7",
        5901,
        instance,
    )
    assert record.expires_at == NOW + 600 and not record.single_use
    assert await store.use(token_hash(token), NOW) == record
    assert await store.use(token_hash(token), NOW) == record
    assert await store.list_tokens(instance, NOW) == [record]


@pytest_twisted.ensureDeferred
async def test_expired_unknown_deleted(cell, store):
    """Expired, unknown, and of a deleted instance all read as absent."""
    instance = cell.add_instance()
    token = cell.mint(instance, expires=NOW + 10)
    assert await store.get(token_hash(token), NOW + 9) is not None
    assert await store.get(token_hash(token), NOW + 10) is None
    assert await store.get(token_hash("unknown"), NOW) is None
    other = cell.mint(instance, expires=NOW + 600)
    cell.delete_instance(instance)
    assert await store.get(token_hash(other), NOW) is None
    orphan = cell.mint("no-such-instance", expires=NOW + 600)
    assert await store.get(token_hash(orphan), NOW) is None


@pytest_twisted.ensureDeferred
async def test_other_console_types_refused(cell, store):
    instance = cell.add_instance()
    spice = cell.mint(instance, console_type="spice-html5", expires=NOW + 600)
    assert await store.get(token_hash(spice), NOW) is None


@pytest_twisted.ensureDeferred
async def test_writes_refused(cell, store):
    """txvnc never writes nova's tokens."""
    for call in (
        lambda: store.add(None),
        lambda: store.remove("x"),
        lambda: store.remove_instance("i"),
    ):
        with pytest.raises(ReadOnlyStore, match="nova"):
            await call()


@pytest_twisted.ensureDeferred
async def test_database_file_untouched(cell, store):
    """Reads leave the file's bytes and modification time as they were."""
    instance = cell.add_instance()
    token = cell.mint(instance, expires=NOW + 600)
    before = (open(cell.path, "rb").read(), os.stat(cell.path).st_mtime_ns)
    for _ in range(3):
        await store.use(token_hash(token), NOW)
    await store.watch(NOW)
    assert (open(cell.path, "rb").read(), os.stat(cell.path).st_mtime_ns) == before
    assert sorted(os.listdir(os.path.dirname(cell.path))) == ["nova.sqlite"]


@pytest_twisted.ensureDeferred
async def test_missing_database_unavailable(tmp_path):
    """No database: StoreUnavailable (the API's 503), not a new empty file."""
    path = tmp_path / "absent.sqlite"
    s = store_from_string(f"nova:sqlite:///{path}", reactor=reactor)
    try:
        with pytest.raises(StoreUnavailable):
            await s.get(token_hash("t"), NOW)
        assert not path.exists()
        CellDB(str(path))
        assert await s.get(token_hash("t"), NOW) is None
    finally:
        await s.close()


def session(instance, token):
    return SessionRecord(
        id="c1",
        node="proxy-a",
        instance_uuid=instance,
        token_hash=token_hash(token),
        client="192.0.2.1:5555",
        host="10.0.0.6",
        port=5900,
        opened_at=NOW,
    )


@pytest_twisted.ensureDeferred
async def test_cleaned_tokens_enter_the_feed(cell, store):
    """
    nova deleting a used token's row (clean_console_auths_for_instance)
    puts it in the revocation feed, once; a token never used does not.
    """
    instance = cell.add_instance()
    used = cell.mint(instance, expires=NOW + 600)
    cell.mint(instance, expires=NOW + 600)
    await store.use(token_hash(used), NOW)
    cursor = await store.revocation_cursor()
    assert await store.watch(NOW) == 0
    cell.clean_instance(instance)
    assert await store.watch(NOW + 1) == 1
    _, entries = await store.revocations(cursor)
    assert [(e.kind, e.value) for e in entries] == [("token", token_hash(used))]
    assert await store.watch(NOW + 2) == 0


@pytest_twisted.ensureDeferred
async def test_expiry_is_not_revocation(cell, store):
    """A row nova purges after its expiry closes nothing."""
    instance = cell.add_instance()
    token = cell.mint(instance, expires=NOW + 100)
    await store.use(token_hash(token), NOW)
    cell.clean_instance(instance)
    assert await store.watch(NOW + 100 - EXPIRY_MARGIN) == 0


@pytest_twisted.ensureDeferred
async def test_deleted_instance_enters_the_feed(cell, store):
    """An instance deleted with a console open (reported) is revoked once."""
    instance = cell.add_instance()
    token = cell.mint(instance, expires=NOW + 100)
    await store.put_sessions("proxy-a", [session(instance, token)], NOW, 30)
    assert await store.watch(NOW) == 0
    cell.delete_instance(instance)
    # Long after the token expired: the console is still open.
    await store.put_sessions("proxy-a", [session(instance, token)], NOW + 470, 30)
    assert await store.watch(NOW + 470) == 1
    _, entries = await store.revocations(0)
    assert [(e.kind, e.value) for e in entries] == [("instance", instance)]
    assert await store.watch(NOW + 471) == 0
