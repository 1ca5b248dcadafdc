"""
API keys with roles: the keys file, role separation, rotation and reload.
"""

import json

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock

from txvnc.consoleauth.keys import (
    ADMIN,
    PROXY,
    KeyFileError,
    KeyRing,
    parse_keys,
    read_key_file,
)
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource

ADMIN_KEY = "admin-key-0123456789"
ADMIN_KEY_2 = "admin-key-next-98765"
PROXY_KEY = "proxy-key-0123456789"
KEYS_TEXT = f"""
# the control plane, and its next key during a rotation
admin  {ADMIN_KEY}
admin  {ADMIN_KEY_2}   # added 2026-11-24
proxy  {PROXY_KEY}
"""


def test_keys_file_format():
    """Lines are ROLE KEY, comments and blanks are skipped, a bare key has both roles."""
    keys = parse_keys(KEYS_TEXT + "\nadmin,proxy both-key\nbare-key\n", "k")
    assert [(k.key, sorted(k.roles)) for k in keys] == [
        (ADMIN_KEY, [ADMIN]),
        (ADMIN_KEY_2, [ADMIN]),
        (PROXY_KEY, [PROXY]),
        ("both-key", [ADMIN, PROXY]),
        ("bare-key", [ADMIN, PROXY]),
    ]
    assert parse_keys("admin has#hash\n", "k")[0].key == "has#hash"


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("root sekrit-key\n", "line 1: unknown role"),
        ("admin a b\n", "line 1: expected ROLE KEY"),
    ],
)
def test_bad_keys_files_say_why_without_the_key(text, why):
    """A malformed keys file names the line and the problem, never a key."""
    with pytest.raises(KeyFileError, match=why) as e:
        parse_keys(text, "keys.txt")
    assert "sekrit" not in str(e.value)


def test_key_for_role(tmp_path):
    """A process finds its own key by role; a file without one says so."""
    path = tmp_path / "keys"
    path.write_text(KEYS_TEXT)
    assert read_key_file(str(path), PROXY) == PROXY_KEY
    assert read_key_file(str(path)) == ADMIN_KEY
    path.write_text(f"admin {ADMIN_KEY}\n")
    with pytest.raises(KeyFileError, match="has no proxy key"):
        read_key_file(str(path), PROXY)


class Api:
    def __init__(self, keys):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.resource = ConsoleAuthResource(
            MemoryTokenStore(), keys, self.clock, "http://proxy.example:6080"
        )
        self.http = StubTreq(self.resource)

    async def call(self, method, path, key, body=None):
        headers = {b"Authorization": [b"Bearer " + key.encode()]}
        data = json.dumps(body).encode() if body is not None else None
        response = await self.http.request(
            method, "http://api.test" + path, headers=headers, data=data
        )
        content = await treq.content(response)
        return response.code, (json.loads(content) if content else None)


@pytest.fixture
def api(tmp_path):
    path = tmp_path / "keys"
    path.write_text(KEYS_TEXT)
    return Api(KeyRing.from_file(str(path)))


MINT = {"host": "10.0.0.6", "port": 5900, "instance_uuid": "i-1"}


@pytest_twisted.ensureDeferred
async def test_proxy_key_cannot_mint_revoke_or_list(api):
    """A proxy key gets 403 from every admin call and can still check and use."""
    status, minted = await api.call("POST", "/v1/tokens", ADMIN_KEY, MINT)
    assert status == 201
    token = minted["token"]
    for method, path, body in [
        ("POST", "/v1/tokens", MINT),
        ("GET", "/v1/tokens", None),
        ("DELETE", f"/v1/tokens/{token}", None),
        ("DELETE", "/v1/instances/i-1/tokens", None),
        ("GET", "/v1/sessions", None),
        ("DELETE", "/v1/sessions/s-1", None),
    ]:
        status, answer = await api.call(method, path, PROXY_KEY, body)
        assert (status, answer) == (
            403,
            {"error": "this API key does not have the admin role"},
        ), (method, path)
    assert (await api.call("GET", f"/v1/tokens/{token}", PROXY_KEY))[0] == 200
    assert (await api.call("POST", f"/v1/tokens/{token}/use", PROXY_KEY))[0] == 200
    assert (await api.call("GET", "/v1/revocations?after=0", PROXY_KEY))[0] == 200


@pytest_twisted.ensureDeferred
async def test_admin_key_cannot_act_as_proxy(api):
    """An admin key gets 403 from the proxy-only calls but may check a token."""
    _, minted = await api.call("POST", "/v1/tokens", ADMIN_KEY, MINT)
    token = minted["token"]
    assert (await api.call("GET", f"/v1/tokens/{token}", ADMIN_KEY))[0] == 200
    for method, path, body in [
        ("POST", f"/v1/tokens/{token}/use", None),
        ("GET", "/v1/revocations?after=0", None),
        ("PUT", "/v1/proxies/p/sessions", {"sessions": []}),
        ("PATCH", "/v1/proxies/p/sessions", {"digest": "0-0"}),
    ]:
        status, answer = await api.call(method, path, ADMIN_KEY, body)
        assert (status, answer) == (
            403,
            {"error": "this API key does not have the proxy role"},
        ), (method, path)


@pytest_twisted.ensureDeferred
async def test_rotation_and_reload(api, tmp_path):
    """Both admin keys work at once; after a reload the removed one gets 401 and a new one works."""
    for key in (ADMIN_KEY, ADMIN_KEY_2):
        assert (await api.call("POST", "/v1/tokens", key, MINT))[0] == 201
    (tmp_path / "keys").write_text(f"admin {ADMIN_KEY_2}\nproxy brand-new-proxy-key\n")
    assert api.resource.keys.reload() is True
    assert (await api.call("POST", "/v1/tokens", ADMIN_KEY, MINT))[0] == 401
    assert (await api.call("POST", "/v1/tokens", ADMIN_KEY_2, MINT))[0] == 201
    assert (await api.call("GET", "/v1/revocations", "brand-new-proxy-key"))[0] == 200
    assert (await api.call("GET", "/v1/revocations", PROXY_KEY))[0] == 401


@pytest_twisted.ensureDeferred
async def test_bad_reload_keeps_the_old_keys(api, tmp_path):
    """A keys file broken mid-rotation leaves the keys in force unchanged."""
    (tmp_path / "keys").write_text("admin\tk1 extra-word\n")
    assert api.resource.keys.reload() is False
    assert (await api.call("POST", "/v1/tokens", ADMIN_KEY, MINT))[0] == 201
    (tmp_path / "keys").unlink()
    assert api.resource.keys.reload() is False
    assert (await api.call("POST", "/v1/tokens", ADMIN_KEY_2, MINT))[0] == 201


@pytest_twisted.ensureDeferred
async def test_single_key_string_has_both_roles():
    """The old single-key configuration still does everything."""
    api = Api("the-only-key")
    status, minted = await api.call("POST", "/v1/tokens", "the-only-key", MINT)
    assert status == 201
    path = f"/v1/tokens/{minted['token']}/use"
    assert (await api.call("POST", path, "the-only-key"))[0] == 200
