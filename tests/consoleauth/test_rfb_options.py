"""
The token fields of the RFB security proxy: validation, the VNC password
sealed at rest and revealed only in a token check, unix targets, and the
SQLite store keeping the options.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock

from txvnc.client import ConnectInfo
from txvnc.consoleauth.keys import ADMIN, PROXY, ApiKey, KeyRing
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.consoleauth.secretbox import SecretBox, SecretError
from txvnc.consoleauth.sqlite import SQLiteTokenStore
from txvnc.consoleauth.tokens import InvalidRequest, parse_token_request
from txvnc.core.tokens import token_hash

KEY = "test-api-key"
AUTH = {b"Authorization": [b"Bearer " + KEY.encode()]}
API = "http://api.test"
TARGET = {"host": "10.0.0.5", "port": 5901}


BOX = SecretBox("a secret key")


def make_api(store=None, secrets=BOX, dirs=("/run/vnc",)):
    store = store or MemoryTokenStore()
    resource = ConsoleAuthResource(
        store, KEY, Clock(), "http://proxy.example", secrets=secrets, allowed_unix_dirs=dirs
    )
    return store, StubTreq(resource)


async def call(http, method, path, body=None):
    kwargs = {"headers": AUTH}
    if body is not None:
        kwargs["data"] = json.dumps(body).encode()
    response = await http.request(method, API + path, **kwargs)
    content = await treq.content(response)
    return response.code, (json.loads(content) if content else None)


def test_all_options_parse() -> None:
    """Every RFB option is accepted and kept as given."""
    request = parse_token_request(
        {**TARGET, "security": "vencrypt", "vnc_password": "pw", "view_only": True, "clipboard": "to_vm", "shared": False}
    )
    assert request.options == {
        "security": "vencrypt", "vnc_password": "pw", "view_only": True, "clipboard": "to_vm", "shared": False,
    }


def test_no_options_means_none_stored() -> None:
    """A token without RFB options has none, so the proxy relays it untouched."""
    assert parse_token_request(dict(TARGET)).options == {}


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"security": "tls"}, "security must be one of: none, vnc, vencrypt"),
        ({"security": "vnc"}, 'security "vnc" needs a vnc_password'),
        ({"vnc_password": "123456789"}, "vnc_password must be a string of 1 to 8 bytes"),
        ({"vnc_password": 12345}, "vnc_password must be a string of 1 to 8 bytes"),
        ({"view_only": "yes"}, "view_only must be true or false"),
        ({"shared": 1}, "shared must be true or false"),
        ({"clipboard": "sideways"}, "clipboard must be one of: both, to_vm, from_vm, none"),
        ({"unix_path": "relative/vnc.sock"}, "unix_path must be an absolute, normalised path of at most 107 bytes"),
        ({"unix_path": "/run/vnc/../../etc/x"}, "unix_path must be an absolute, normalised path of at most 107 bytes"),
        ({"unix_path": "/run/" + "x" * 200}, "unix_path must be an absolute, normalised path of at most 107 bytes"),
    ],
)
def test_bad_options_are_refused(fields: dict, message: str) -> None:
    """Each bad option is refused with a message naming it, never echoing a password."""
    with pytest.raises(InvalidRequest) as caught:
        parse_token_request({**TARGET, **fields})
    assert str(caught.value) == message


def test_unix_path_replaces_host_and_port() -> None:
    """unix_path stands alone; with host or port it is refused."""
    request = parse_token_request({"unix_path": "/run/vnc/a.sock"})
    assert request.options == {"unix_path": "/run/vnc/a.sock"}
    with pytest.raises(InvalidRequest, match="not both"):
        parse_token_request({**TARGET, "unix_path": "/run/vnc/a.sock"})


@pytest_twisted.ensureDeferred
async def test_password_is_sealed_at_rest_and_revealed_to_the_check() -> None:
    """The store holds only ciphertext; GET /v1/tokens/T gives the proxy the password."""
    store, http = make_api()
    code, answer = await call(http, "POST", "/v1/tokens", {**TARGET, "security": "vnc", "vnc_password": "hunter2"})
    assert code == 201 and "hunter2" not in json.dumps(answer)
    record = await store.get(token_hash(answer["token"]), 0)
    assert "hunter2" not in json.dumps(record.options)
    assert "vnc_password" not in record.options
    code, info = await call(http, "GET", "/v1/tokens/" + answer["token"])
    assert code == 200
    assert info["vnc_password"] == "hunter2"
    assert "vnc_password_sealed" not in info
    assert ConnectInfo.from_json(info).security == "vnc"
    assert "hunter2" not in repr(ConnectInfo.from_json(info))


@pytest_twisted.ensureDeferred
async def test_password_needs_a_secret_key() -> None:
    """A token API without a secret key refuses to store a VNC password."""
    _, http = make_api(secrets=None)
    code, answer = await call(http, "POST", "/v1/tokens", {**TARGET, "vnc_password": "pw"})
    assert (code, answer) == (400, {"error": "this token API has no secret key to store a VNC password"})


@pytest_twisted.ensureDeferred
async def test_unix_target_under_allowed_dir() -> None:
    """A unix socket under --allowed-unix-dir is minted and checked like any target."""
    _, http = make_api()
    code, answer = await call(http, "POST", "/v1/tokens", {"unix_path": "/run/vnc/vm1.sock"})
    assert code == 201
    code, info = await call(http, "GET", "/v1/tokens/" + answer["token"])
    assert ConnectInfo.from_json(info).target == "/run/vnc/vm1.sock"
    code, answer = await call(http, "POST", "/v1/tokens", {"unix_path": "/run/vncx/vm1.sock"})
    assert code == 403


def test_secret_box_detects_another_key() -> None:
    """A password sealed under one key file cannot be opened with another."""
    sealed = SecretBox("one").seal("pw")
    assert SecretBox("one").open(sealed) == "pw"
    with pytest.raises(SecretError, match="secret-key-file"):
        SecretBox("two").open(sealed)


@pytest_twisted.ensureDeferred
async def test_sqlite_keeps_options_and_upgrades_old_files(tmp_path: Path) -> None:
    """The SQLite store keeps token options, and adds the column to a store made before them."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,"
        " instance_uuid TEXT, console_type TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL)"
    )
    db.commit()
    db.close()
    options = {"view_only": True, "vnc_password_sealed": SecretBox("k").seal("pw")}
    record = parse_token_request({**TARGET, "view_only": True}).to_record("tok", 0.0)
    record = replace(record, options=options)
    store = SQLiteTokenStore(str(path))
    try:
        await store.add(record)
        assert (await store.get(token_hash("tok"), 1.0)) == record
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_replaced_secret_key_is_a_clear_error() -> None:
    """A token whose password was sealed under another key answers 500 with a reason, no traceback."""
    store, http = make_api()
    _, answer = await call(http, "POST", "/v1/tokens", {**TARGET, "vnc_password": "pw"})
    _, other = make_api(store, secrets=SecretBox("a replaced key"))
    code, body = await call(other, "GET", "/v1/tokens/" + answer["token"])
    assert (code, body) == (500, {"error": "the token's VNC password cannot be decrypted"})


@pytest_twisted.ensureDeferred
async def test_only_the_proxy_role_receives_the_password() -> None:
    """An admin-only key checking a token sees its options but never its VNC password; a proxy key does."""
    ring = KeyRing((ApiKey("admin-key", frozenset({ADMIN})), ApiKey("proxy-key", frozenset({PROXY}))))
    resource = ConsoleAuthResource(MemoryTokenStore(), ring, Clock(), "http://proxy.example", secrets=BOX)
    http = StubTreq(resource)

    async def as_(key: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        kwargs: dict = {"headers": {b"Authorization": [b"Bearer " + key.encode()]}}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
        response = await http.request(method, API + path, **kwargs)
        return response.code, json.loads(await treq.content(response))

    code, answer = await as_("admin-key", "POST", "/v1/tokens", {"host": "127.0.0.1", "port": 5901, "security": "vnc", "vnc_password": "pw"})
    assert code == 201, answer
    code, info = await as_("admin-key", "GET", "/v1/tokens/" + answer["token"])
    assert (code, info.get("security")) == (200, "vnc"), info
    assert "vnc_password" not in info
    code, info = await as_("proxy-key", "GET", "/v1/tokens/" + answer["token"])
    assert (code, info.get("vnc_password"), info.get("security")) == (200, "pw", "vnc")
