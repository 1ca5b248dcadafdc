"""
The token API resource, through treq's in-memory client.
"""

import json

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.web.server import Site

from tests.support.mint import mint_answer
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.consoleauth.sqlite import SQLiteTokenStore
from txvnc.core.tokens import token_hash

KEY = "test-api-key"
AUTH = {b"Authorization": [b"Bearer " + KEY.encode()]}
API = "http://api.test"


class Api:
    """A resource on a memory store with a clock, and a stub client for it."""

    def __init__(self, store=None):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = store or MemoryTokenStore()
        self.resource = ConsoleAuthResource(
            self.store, KEY, self.clock, "http://proxy.example:6080/"
        )
        self.http = StubTreq(self.resource)

    async def call(self, method, path, body=None, headers=AUTH, raw=None):
        kwargs = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["data"] = json.dumps(body).encode()
        response = await self.http.request(method, API + path, **kwargs)
        content = await treq.content(response)
        parsed = json.loads(content) if content else None
        return response, parsed

    async def mint(self, **fields):
        fields = {"host": "127.0.0.1", "port": 5900, **fields}
        return await mint_answer(API, KEY, http=self.http, **fields)


@pytest.fixture
def api():
    return Api()


@pytest_twisted.ensureDeferred
async def test_mint_answers_token_and_access_url(api):
    """POST /v1/tokens answers 201 with the token, its URL and its expiry."""
    response, answer = await api.call(
        "POST",
        "/v1/tokens",
        {"host": "10.0.0.6", "port": 5901, "instance_uuid": "9165dbda", "ttl": 60},
    )
    assert response.code == 201
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    token = answer["token"]
    assert answer["access_url"] == (
        f"http://proxy.example:6080/vnc_auto.html?token={token}"
    )
    assert answer["instance_uuid"] == "9165dbda"
    assert answer["console_type"] == "novnc"
    assert answer["expires_at"] == "1970-01-12T13:47:40Z"  # 1,000,060 s


@pytest_twisted.ensureDeferred
async def test_check_answers_connect_info(api):
    """GET /v1/tokens/T answers where to connect."""
    token = (await api.mint(host="10.0.0.6", port=5901, instance_uuid="u-1"))["token"]
    response, info = await api.call("GET", f"/v1/tokens/{token}")
    assert response.code == 200
    assert info == {
        "host": "10.0.0.6",
        "port": 5901,
        "instance_uuid": "u-1",
        "console_type": "novnc",
        "expires_at": "1970-01-12T13:56:40Z",
        "single_use": False,
    }


@pytest_twisted.ensureDeferred
async def test_unknown_and_expired_answer_the_same_404(api):
    """An expired token gets exactly the answer an unknown one gets."""
    token = (await api.mint(ttl=30))["token"]
    unknown_response, unknown = await api.call("GET", "/v1/tokens/not-a-token")
    api.clock.advance(29)
    response, _ = await api.call("GET", f"/v1/tokens/{token}")
    assert response.code == 200
    api.clock.advance(1)
    expired_response, expired = await api.call("GET", f"/v1/tokens/{token}")
    assert unknown_response.code == expired_response.code == 404
    assert unknown == expired == {"error": "the token is invalid or has expired"}


@pytest_twisted.ensureDeferred
async def test_revoke_token(api):
    """DELETE /v1/tokens/T answers 204 and the token stops working."""
    token = (await api.mint())["token"]
    response, body = await api.call("DELETE", f"/v1/tokens/{token}")
    assert (response.code, body) == (204, None)
    response, _ = await api.call("GET", f"/v1/tokens/{token}")
    assert response.code == 404
    # Revoking again is not an error: the token is gone either way.
    response, _ = await api.call("DELETE", f"/v1/tokens/{token}")
    assert response.code == 204


@pytest_twisted.ensureDeferred
async def test_revoke_instance(api):
    """DELETE /v1/instances/U/tokens revokes that instance's tokens only."""
    a = (await api.mint(instance_uuid="u-1"))["token"]
    b = (await api.mint(instance_uuid="u-1"))["token"]
    other = (await api.mint(instance_uuid="u-2"))["token"]
    response, _ = await api.call("DELETE", "/v1/instances/u-1/tokens")
    assert response.code == 204
    for token, code in [(a, 404), (b, 404), (other, 200)]:
        response, _ = await api.call("GET", f"/v1/tokens/{token}")
        assert response.code == code


@pytest_twisted.ensureDeferred
async def test_store_holds_only_the_hash(api):
    """The store is keyed on the token's SHA-256."""
    token = (await api.mint())["token"]
    assert token not in api.store._records
    assert token_hash(token) in api.store._records


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {b"Authorization": [b"Bearer wrong-key"]},
        {b"Authorization": [b"Basic " + KEY.encode()]},
        {b"Authorization": [KEY.encode()]},
    ],
)
@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/tokens"),
        ("GET", "/v1/tokens/x"),
        ("DELETE", "/v1/tokens/x"),
        ("DELETE", "/v1/instances/u/tokens"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_every_call_needs_the_key(api, method, path, headers):
    """A missing or wrong key gets 401 on every route."""
    response, body = await api.call(method, path, {"host": "h", "port": 1}, headers)
    assert response.code == 401
    assert body == {"error": "a valid API key is required"}
    assert response.headers.getRawHeaders(b"www-authenticate")


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "request body is not valid JSON"),
        (b"\xff\xfe", "request body is not valid JSON"),
        (b"", "request body is not valid JSON"),
        (b'["host"]', "the request body must be a JSON object"),
        (b'{"port": 5900}', "missing host"),
        (b'{"host": "h", "port": 70000}', "port must be an integer from 1 to 65535"),
        (
            b'{"host": "h", "port": 5900, "ttl": 0}',
            "ttl must be a positive integer (seconds)",
        ),
        (
            b'{"host": "h", "port": 5900, "ttl": -1}',
            "ttl must be a positive integer (seconds)",
        ),
        (b'{"host": "' + b"a" * 70000 + b'", "port": 1}', "request body over 64 KiB"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_input_is_400_with_reason(api, raw, message):
    """Each kind of bad request body gets 400 and a JSON error naming it."""
    response, body = await api.call("POST", "/v1/tokens", raw=raw)
    assert response.code == 400
    assert body == {"error": message}


@pytest.mark.parametrize(
    "path", ["/", "/v1", "/v2/tokens", "/v1/tokens/a/b", "/v1/instances/u", "/x"]
)
@pytest_twisted.ensureDeferred
async def test_unknown_path_is_404(api, path):
    """Paths outside the API get a JSON 404."""
    response, body = await api.call("GET", path)
    assert response.code == 404
    assert body == {"error": "no such resource"}


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("PUT", "/v1/tokens", b"GET, POST"),
        ("PUT", "/v1/tokens/x", b"DELETE, GET"),
        ("GET", "/v1/tokens/x/use", b"POST"),
        ("POST", "/v1/sessions", b"GET"),
        ("POST", "/v1/tokens/x", b"DELETE, GET"),
        ("GET", "/v1/instances/u/tokens", b"DELETE"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_with_allow(api, method, path, allow):
    """A known path with the wrong method gets 405 and the methods it takes."""
    response, body = await api.call(method, path)
    assert response.code == 405
    assert response.headers.getRawHeaders(b"allow") == [allow]
    assert body["error"].startswith("method")


class BrokenStore(MemoryTokenStore):
    def get(self, token_hash, now):
        raise RuntimeError("disk on fire: /var/lib/secret/path")


@pytest_twisted.ensureDeferred
async def test_store_failure_is_500_without_traceback():
    """A failing store gives a plain 500, never the exception or traceback."""
    api = Api(store=BrokenStore())
    response, body = await api.call("GET", "/v1/tokens/x")
    assert response.code == 500
    assert body == {"error": "internal error"}


@pytest_twisted.ensureDeferred
async def test_sqlite_tokens_survive_a_restart(tmp_path):
    """A token minted before a restart still works after, on the same file."""
    path = str(tmp_path / "txvnc.sqlite")
    clock = Clock()
    clock.advance(1000)

    async def serve(store):
        resource = ConsoleAuthResource(store, KEY, clock, "http://p:6080")
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        return port, f"http://127.0.0.1:{port.getHost().port}"

    store = SQLiteTokenStore(path)
    port, url = await serve(store)
    response = await treq.post(
        url + "/v1/tokens",
        json={"host": "10.0.0.6", "port": 5900, "ttl": 60},
        headers=AUTH,
    )
    token = (await response.json())["token"]
    await port.stopListening()
    await store.close()

    store = SQLiteTokenStore(path)
    port, url = await serve(store)
    try:
        response = await treq.get(f"{url}/v1/tokens/{token}", headers=AUTH)
        assert response.code == 200
        assert (await response.json())["port"] == 5900
        clock.advance(60)
        response = await treq.get(f"{url}/v1/tokens/{token}", headers=AUTH)
        assert response.code == 404
        await treq.content(response)
    finally:
        await port.stopListening()
        await store.close()


BAD_INSTANCE_NAMES = [
    pytest.param("a%0Ab", "a\nb", id="newline"),
    pytest.param("a%1B%5B2Jb", "a\x1b[2Jb", id="escape"),
    pytest.param("a%E2%80%AEb", "a\u202eb", id="right-to-left-override"),
    pytest.param("rack%2F7", "rack/7", id="slash"),
    pytest.param("u" * 256, "u" * 256, id="256-characters"),
]


@pytest.mark.parametrize("quoted, name", BAD_INSTANCE_NAMES)
@pytest_twisted.ensureDeferred
async def test_bad_instance_names_get_the_mint_answer(api, quoted, name):
    """
    An instance name that could never be minted (a control character, a
    '/', over 255 characters) gets the mint's 400 answer when it names the
    instance to revoke (DELETE /v1/instances/U/tokens) or to list
    (GET /v1/tokens?instance_uuid=U), and nothing is revoked.
    """
    response, minted = await api.call(
        "POST", "/v1/tokens", {"host": "10.0.0.6", "port": 5901, "instance_uuid": name}
    )
    assert response.code == 400
    token = (await api.mint(instance_uuid="u-1"))["token"]
    for method, path in [
        ("DELETE", f"/v1/instances/{quoted}/tokens"),
        ("GET", f"/v1/tokens?instance_uuid={quoted}"),
    ]:
        response, answer = await api.call(method, path)
        assert (response.code, answer) == (400, minted), path
    assert (await api.store.revocations(0))[1] == []
    response, _ = await api.call("GET", f"/v1/tokens/{token}")
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_listing_with_an_empty_instance_name_lists_all(api):
    """GET /v1/tokens?instance_uuid= (empty) is the whole list, as before."""
    await api.mint(instance_uuid="u-1")
    await api.mint(instance_uuid="u-2")
    response, answer = await api.call("GET", "/v1/tokens?instance_uuid=")
    assert response.code == 200
    assert len(answer["tokens"]) == 2
