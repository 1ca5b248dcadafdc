"""
The token API's newer calls: target policy at mint, token life (max ttl,
single use, listing), the revocation feed, the console registry and the
OpenAPI document.
"""

import json
from pathlib import Path

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock

from tests.support.mint import mint
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.consoleauth.routes.sessions import RESEND_ALL
from txvnc.core.audit import AuditLog
from txvnc.core.digest import digest_of
from txvnc.core.forwarded import parse_networks
from txvnc.core.targets import TargetPolicy
from txvnc.core.tokens import token_hash

KEY = "lifecycle-key"
REPO = Path(__file__).resolve().parents[2]


class Api:
    def __init__(self, tmp_path, **options):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = MemoryTokenStore()
        self.audit_path = tmp_path / "audit.jsonl"
        self.resource = ConsoleAuthResource(
            self.store,
            KEY,
            self.clock,
            "http://proxy.example:6080",
            audit=AuditLog(self.clock, str(self.audit_path)),
            **options,
        )
        self.http = StubTreq(self.resource)

    async def call(self, method, path, body=None, key=KEY, forwarded_for=None):
        headers = {b"Authorization": [b"Bearer " + key.encode()]}
        if forwarded_for is not None:
            headers[b"X-Forwarded-For"] = [forwarded_for.encode()]
        data = json.dumps(body).encode() if body is not None else None
        response = await self.http.request(
            method, "http://api.test" + path, headers=headers, data=data
        )
        content = await treq.content(response)
        if response.headers.getRawHeaders(b"content-type") == [b"application/json"]:
            return response.code, json.loads(content)
        return response.code, content

    async def mint(self, **fields):
        fields = {"host": "10.0.0.6", "port": 5900, "instance_uuid": "i-1", **fields}
        return await mint("http://api.test", KEY, http=self.http, **fields)

    def audit(self):
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture
def api(tmp_path):
    return Api(tmp_path)


@pytest_twisted.ensureDeferred
async def test_mint_outside_the_target_policy_is_403(tmp_path):
    """A target the policy does not allow is refused with 403 and nothing is stored."""
    api = Api(tmp_path, policy=TargetPolicy.parse(["10.0.0.0/8:5900-5999"]))
    for host, port in [("10.0.0.6", 22), ("192.168.1.5", 5900), ("vnc.example", 5900)]:
        status, answer = await api.call(
            "POST", "/v1/tokens", {"host": host, "port": port}
        )
        assert status == 403
        assert answer == {
            "error": f"target {host}:{port} is not allowed by the target policy"
        }
    assert await api.store.list_tokens(None, api.clock.seconds()) == []
    assert [e["reason"] for e in api.audit()] == ["target not allowed"] * 3
    await api.mint(host="10.200.0.1", port=5999)


@pytest_twisted.ensureDeferred
async def test_default_policy_refuses_public_and_odd_ports(api):
    """Without --allowed-target, only loopback and private ranges on 5900-6999 can be minted."""
    await api.mint(host="127.0.0.1", port=5901)
    await api.mint(host="192.168.0.9", port=6999)
    for host, port in [
        ("8.8.8.8", 5900),
        ("127.0.0.1", 22),
        ("10.0.0.1", 7000),
        ("169.254.169.254", 5900),
    ]:
        status, _ = await api.call("POST", "/v1/tokens", {"host": host, "port": port})
        assert status == 403, (host, port)


@pytest_twisted.ensureDeferred
async def test_max_token_ttl(tmp_path):
    """A ttl over --max-token-ttl is a 400 naming the limit; the default ttl fits under it."""
    api = Api(tmp_path, max_ttl=120)
    status, answer = await api.call(
        "POST", "/v1/tokens", {"host": "10.0.0.6", "port": 5900, "ttl": 121}
    )
    assert (status, answer) == (400, {"error": "ttl must be at most 120 seconds"})
    token = await api.mint()
    record = await api.store.get(token_hash(token), api.clock.seconds())
    assert record.expires_at - record.created_at == 120


@pytest_twisted.ensureDeferred
async def test_single_use_token_works_once(api):
    """A single-use token survives checks and is gone after its first use."""
    token = await api.mint(single_use=True)
    assert (await api.call("GET", f"/v1/tokens/{token}"))[1]["single_use"] is True
    assert (await api.call("GET", f"/v1/tokens/{token}"))[0] == 200
    status, info = await api.call("POST", f"/v1/tokens/{token}/use")
    assert status == 200
    assert info["host"] == "10.0.0.6" and info["revocation_cursor"] == 0
    assert (await api.call("POST", f"/v1/tokens/{token}/use"))[0] == 404
    assert (await api.call("GET", f"/v1/tokens/{token}"))[0] == 404
    events = [e["event"] for e in api.audit()]
    assert events == [
        "token.minted",
        "token.used",
        "token.use_failed",
        "token.check_failed",
    ]


@pytest_twisted.ensureDeferred
async def test_ordinary_token_is_reusable(api):
    """An ordinary token opens any number of consoles until it expires."""
    token = await api.mint(ttl=60)
    for _ in range(3):
        assert (await api.call("POST", f"/v1/tokens/{token}/use"))[0] == 200
    api.clock.advance(60)
    assert (await api.call("POST", f"/v1/tokens/{token}/use"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_list_tokens_shows_metadata_never_secrets(api):
    """Listing by instance shows each live token's metadata and hash, never the token."""
    first = await api.mint(instance_uuid="i-1")
    api.clock.advance(1)
    second = await api.mint(instance_uuid="i-1", single_use=True, port=5901)
    await api.mint(instance_uuid="i-2")
    status, answer = await api.call("GET", "/v1/tokens?instance_uuid=i-1")
    assert status == 200
    assert [t["token_hash"] for t in answer["tokens"]] == [
        token_hash(first),
        token_hash(second),
    ]
    assert answer["tokens"][1] == {
        "token_hash": token_hash(second),
        "instance_uuid": "i-1",
        "host": "10.0.0.6",
        "port": 5901,
        "console_type": "novnc",
        "single_use": True,
        "created_at": "1970-01-12T13:46:41Z",
        "expires_at": "1970-01-12T13:56:41Z",
    }
    assert first not in json.dumps(answer) and second not in json.dumps(answer)
    assert len((await api.call("GET", "/v1/tokens"))[1]["tokens"]) == 3


@pytest_twisted.ensureDeferred
async def test_revocations_enter_the_feed(api):
    """Revoking a token, an instance or a console appends to the feed, in order."""
    token = await api.mint()
    await api.call("DELETE", f"/v1/tokens/{token}")
    await api.call("DELETE", "/v1/tokens/never-minted")
    await api.call("DELETE", "/v1/instances/i-7/tokens")
    status, feed = await api.call("GET", "/v1/revocations?after=0")
    assert status == 200
    assert feed == {
        "cursor": 3,
        "revocations": [
            {"seq": 1, "kind": "token", "value": token_hash(token)},
            {"seq": 2, "kind": "token", "value": token_hash("never-minted")},
            {"seq": 3, "kind": "instance", "value": "i-7"},
        ],
    }
    assert (await api.call("GET", "/v1/revocations?after=2"))[1]["revocations"] == [
        {"seq": 3, "kind": "instance", "value": "i-7"}
    ]
    for bad in ["-1", "x", "1" * 30]:
        assert (await api.call("GET", f"/v1/revocations?after={bad}"))[0] == 400


def report(sid, instance="i-1", **extra):
    return {
        "id": sid,
        "instance_uuid": instance,
        "token_hash": token_hash("t"),
        "client": "192.0.2.1:5555",
        "host": "10.0.0.6",
        "port": 5900,
        "opened_at": 1_000_000.0,
        "bytes_to_vnc": 5,
        "bytes_from_vnc": 7,
        **extra,
    }


@pytest_twisted.ensureDeferred
async def test_sessions_are_listed_and_killed(api):
    """Reported consoles are listed (by instance too) and one can be closed through the feed."""
    status, _ = await api.call(
        "PUT",
        "/v1/proxies/proxy-a/sessions",
        {"ttl": 30, "sessions": [report("s1"), report("s2", "i-2")]},
    )
    assert status == 204
    status, answer = await api.call("GET", "/v1/sessions?instance_uuid=i-1")
    assert status == 200
    assert answer == {
        "sessions": [
            {
                "id": "s1",
                "proxy": "proxy-a",
                "instance_uuid": "i-1",
                "client": "192.0.2.1:5555",
                "target": "10.0.0.6:5900",
                "opened_at": "1970-01-12T13:46:40Z",
                "bytes_to_vnc": 5,
                "bytes_from_vnc": 7,
            }
        ]
    }
    assert len((await api.call("GET", "/v1/sessions"))[1]["sessions"]) == 2
    assert (await api.call("DELETE", "/v1/sessions/s2"))[0] == 204
    assert (await api.call("DELETE", "/v1/sessions/s9"))[0] == 404
    feed = (await api.call("GET", "/v1/revocations?after=0"))[1]
    assert feed["revocations"] == [{"seq": 1, "kind": "session", "value": "s2"}]
    api.clock.advance(30)
    assert (await api.call("GET", "/v1/sessions"))[1] == {"sessions": []}
    assert api.audit()[-1]["event"] == "session.killed"


@pytest.mark.parametrize(
    "body, why",
    [
        ([], "must be"),
        ({"sessions": "x"}, "must be"),
        ({"sessions": [1]}, "each session"),
        ({"sessions": [{"id": "s"}]}, "bad session record"),
        ({"sessions": [], "ttl": 0}, "ttl must be"),
        ({"sessions": [], "ttl": True}, "ttl must be"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_session_reports_are_400(api, body, why):
    """A malformed console report is refused with 400 saying what is wrong."""
    status, answer = await api.call("PUT", "/v1/proxies/p/sessions", body)
    assert status == 400
    assert why in answer["error"]


@pytest_twisted.ensureDeferred
async def test_change_reports_apply_when_the_digests_agree(api):
    """
    A change report (PATCH) adds and removes consoles from the last whole
    report when its digest matches the API's; else 409, and the whole list
    mends it.
    """
    path = "/v1/proxies/proxy-a/sessions"
    change = {"added": [report("s3")], "removed": ["s1"], "digest": digest_of(["s2", "s3"])}
    assert (await api.call("PATCH", path, change))[0] == 409  # nothing reported yet
    assert (await api.call("PUT", path, {"sessions": [report("s1"), report("s2")]}))[0] == 204
    assert (await api.call("PATCH", path, change))[0] == 204
    listed = (await api.call("GET", "/v1/sessions"))[1]["sessions"]
    assert sorted(s["id"] for s in listed) == ["s2", "s3"]
    status, answer = await api.call("PATCH", path, {"digest": digest_of(["s2"])})
    assert (status, answer["error"]) == (409, RESEND_ALL)
    assert (await api.call("PUT", path, {"sessions": [report("s2")]}))[0] == 204
    assert (await api.call("PATCH", path, {"digest": digest_of(["s2"])}))[0] == 204


@pytest.mark.parametrize(
    "body, why",
    [
        ([], "must be an object"),
        ({"added": []}, "digest must be"),
        ({"digest": 5}, "digest must be"),
        ({"digest": "1-a", "removed": [""]}, "removed must be"),
        ({"digest": "1-a", "removed": "s1"}, "removed must be"),
        ({"digest": "1-a", "added": {}}, "added must be"),
        ({"digest": "1-a", "added": [{"id": "s"}]}, "bad session record"),
        ({"digest": "1-a", "ttl": 0}, "ttl must be"),
        ({"digest": "1-a", "sessions": []}, "unknown field"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_change_reports_are_400(api, body, why):
    """A malformed change report is refused with 400 saying what is wrong."""
    status, answer = await api.call("PATCH", "/v1/proxies/p/sessions", body)
    assert status == 400
    assert why in answer["error"]


@pytest_twisted.ensureDeferred
async def test_openapi_document_is_served_without_a_key(api):
    """GET /v1/openapi.yaml answers the shipped document, the one in docs/api, with no key."""
    response = await api.http.get("http://api.test/v1/openapi.yaml")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/yaml"]
    body = await treq.content(response)
    assert body == (REPO / "docs" / "api" / "openapi.yaml").read_bytes()
    assert body.startswith(b"openapi: 3.")


@pytest_twisted.ensureDeferred
async def test_audit_log_never_holds_a_token(api):
    """Audit lines carry the token's hash and the actor's role, never the token or key."""
    token = await api.mint()
    await api.call("POST", f"/v1/tokens/{token}/use")
    await api.call("DELETE", f"/v1/tokens/{token}")
    await api.call("DELETE", "/v1/instances/i-1/tokens")
    text = api.audit_path.read_text()
    assert token not in text and KEY not in text
    events = api.audit()
    assert [e["event"] for e in events] == [
        "token.minted",
        "token.revoked",
        "instance.revoked",
    ]
    minted = events[0]
    assert minted["token_hash"] == token_hash(token)
    assert minted["actor"] == "admin,proxy"
    assert minted["target"] == "10.0.0.6:5900"
    assert minted["instance_uuid"] == "i-1"
    assert minted["time"] == "1970-01-12T13:46:40Z"


@pytest_twisted.ensureDeferred
async def test_audit_lines_name_the_client_as_trusted_proxies_resolve_it(api):
    """Each audit line names the caller: the peer, or behind a --trusted-proxy the client it forwarded for."""
    await api.call("DELETE", "/v1/instances/i-1/tokens", forwarded_for="203.0.113.7")
    api.resource.trusted_proxies = parse_networks(["0.0.0.0/0"])
    await api.call("DELETE", "/v1/instances/i-2/tokens", forwarded_for="203.0.113.7")
    first, second = api.audit()
    assert first["client"] != "203.0.113.7" and first["client"] != "-"
    assert second["client"] == "203.0.113.7"


@pytest_twisted.ensureDeferred
async def test_unavailable_store_is_503_without_traceback(api):
    """A store that cannot be reached answers 503, logged as an error, not a 500."""
    from twisted.internet.defer import fail

    from txvnc.consoleauth.store import StoreUnavailable

    api.store.get = lambda *a: fail(StoreUnavailable("Redis: Lost connection"))
    status, answer = await api.call("GET", "/v1/tokens/x")
    assert (status, answer) == (503, {"error": "the token store is unavailable"})
