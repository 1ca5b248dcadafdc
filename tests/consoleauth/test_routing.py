"""
How the token API routes raw requests on klein: what klein and werkzeug would
do by default and this API does not (split an encoded slash, read Host, add
HEAD, cancel a handler whose client left), and the check and use fast path
answering exactly as the klein route does.
"""

import json
import re

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

import txvnc.consoleauth.resource as resource_module
from txvnc.consoleauth.keys import ADMIN, PROXY, ApiKey, KeyRing
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.consoleauth.secretbox import SecretBox
from txvnc.core.audit import AuditLog

ADMIN_KEY, PROXY_KEY = "routing-admin-key", "routing-proxy-key"
KEYS = KeyRing(
    (ApiKey(ADMIN_KEY, frozenset({ADMIN})), ApiKey(PROXY_KEY, frozenset({PROXY})))
)


class Api:
    """The resource on a memory store, spoken to in raw HTTP with no socket."""

    def __init__(self, tmp_path, store=None):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = store or MemoryTokenStore()
        self.audit_path = tmp_path / "audit.jsonl"
        self.resource = ConsoleAuthResource(
            self.store,
            KEYS,
            self.clock,
            "http://proxy.test",
            secrets=SecretBox("routing secret"),
            audit=AuditLog(self.clock, str(self.audit_path)),
        )
        self.site = Site(self.resource)

    def connect(self, peer=None):
        channel = self.site.buildProtocol(None)
        transport = StringTransport(
            peerAddress=peer or IPv4Address("TCP", "192.0.2.9", 40000),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 6081),
        )
        channel.makeConnection(transport)
        return channel, transport

    def raw(self, data, peer=None):
        channel, transport = self.connect(peer)
        channel.dataReceived(data)
        answer = re.sub(rb"\r\nDate: [^\r]*", b"", transport.value())
        channel.connectionLost(Exception("done"))
        return answer

    def request(self, method, path, key=None, body=b"", headers=b""):
        auth = b"Authorization: Bearer %s\r\n" % key.encode() if key else b""
        return self.raw(
            b"%s %s HTTP/1.1\r\nHost: api.test\r\n%s%sContent-Length: %d\r\n\r\n%s"
            % (method.encode(), path.encode(), auth, headers, len(body), body)
        )

    def mint(self, **fields):
        body = json.dumps({"host": "10.0.0.6", "port": 5900, **fields}).encode()
        answer = self.request("POST", "/v1/tokens", ADMIN_KEY, body)
        return json.loads(answer[answer.index(b'{"token"') :].split(b"\n")[0])["token"]

    def audit(self):
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture
def api(tmp_path):
    return Api(tmp_path)


def status(answer):
    return int(answer.split(b" ", 2)[1])


def body(answer):
    content = answer.split(b"\r\n\r\n", 1)[1]
    if b"Transfer-Encoding: chunked" in answer:
        content = content.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n\r\n", 1)[0]
    return json.loads(content) if content else None


FAST_PATH_CALLS = [
    ("GET", "/v1/tokens/{token}", PROXY_KEY, b""),
    ("GET", "/v1/tokens/{token}/", ADMIN_KEY, b""),
    ("GET", "/v1/tokens/{token}?instance_uuid=" + "u" * 257, PROXY_KEY, b""),
    ("GET", "/v1/tokens/unknown", PROXY_KEY, b""),
    ("GET", "/v1/tokens/a%2Fb", PROXY_KEY, b""),
    ("GET", "/v1/tokens/%FF", PROXY_KEY, b""),
    ("GET", "/v1/tokens/" + "t" * 257, PROXY_KEY, b""),
    ("GET", "/v1/tokens/{token}", None, b""),
    ("GET", "/v1/tokens/{token}", "wrong-key", b""),
    ("POST", "/v1/tokens/{token}/use", PROXY_KEY, b"ignored"),
    ("POST", "/v1/tokens/{token}/use/", PROXY_KEY, b""),
    ("POST", "/v1/tokens/unknown/use", PROXY_KEY, b""),
    ("POST", "/v1/tokens/{token}/use", ADMIN_KEY, b""),
    ("POST", "/v1/tokens/{token}/use", None, b""),
]


@pytest.mark.parametrize("method, path, key, sent", FAST_PATH_CALLS)
def test_fast_path_answers_as_the_klein_route(api, monkeypatch, method, path, key, sent):
    """The check and the use give the same bytes and audit lines with and without the fast path."""
    token = api.mint(vnc_password="secret", security="vnc", instance_uuid="i-1")
    path = path.format(token=token)
    chosen = []
    real = resource_module.fast_route
    monkeypatch.setattr(resource_module, "fast_route", lambda r: chosen.append(real(r)) or chosen[-1])
    fast = api.request(method, path, key, sent)
    assert chosen[-1] is not None
    fast_audit = api.audit()[1:]
    monkeypatch.setattr(resource_module, "fast_route", lambda request: None)
    slow = api.request(method, path, key, sent)
    assert fast == slow
    assert fast_audit == api.audit()[1 + len(fast_audit) :]


def test_an_encoded_slash_stays_in_its_segment(api):
    """
    A %2F in an instance name is part of the name (which, holding a '/', the
    mint refuses, and so does the revocation); a real slash is another path.
    """
    answer = api.request("DELETE", "/v1/instances/rack%2F7/tokens", ADMIN_KEY)
    assert status(answer) == 400
    assert "without '/'" in body(answer)["error"]
    feed = body(api.request("GET", "/v1/revocations", PROXY_KEY))
    assert feed["revocations"] == []
    answer = api.request("DELETE", "/v1/instances/rack/7/tokens", ADMIN_KEY)
    assert (status(answer), body(answer)) == (404, {"error": "no such resource"})


@pytest.mark.parametrize("path", ["//v1/tokens", "/v1//tokens", "/v1/tokens//"])
def test_empty_segments_are_not_merged(api, path):
    """Doubled slashes make a path no route has (werkzeug would merge or strip them)."""
    answer = api.request("GET", path, ADMIN_KEY)
    assert (status(answer), body(answer)) == (404, {"error": "no such resource"})


@pytest.mark.parametrize("host", [b"a..b", b"x" * 64 + b".test", b"\xff\xfe", b""])
def test_the_host_header_is_not_read(api, host):
    """Any Host header, even one werkzeug would refuse, gets the route's JSON answer."""
    answer = api.raw(
        b"GET /v1/tokens HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n"
        % (host, ADMIN_KEY.encode())
    )
    assert (status(answer), body(answer)) == (200, {"tokens": []})


def test_no_host_over_a_unix_socket(api):
    """An HTTP/1.0 request without Host over a unix socket is answered too."""
    answer = api.raw(
        b"GET /v1/sessions HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n"
        % ADMIN_KEY.encode(),
        peer=UNIXAddress(None),
    )
    assert (status(answer), body(answer)) == (200, {"sessions": []})


def test_head_is_405_except_for_the_document(api):
    """HEAD on a JSON route is a 405 naming its methods; the OpenAPI document answers it."""
    answer = api.request("HEAD", "/v1/tokens/x", PROXY_KEY)
    assert status(answer) == 405
    assert b"\r\nAllow: DELETE, GET\r\n" in answer
    assert answer.endswith(b"\r\nContent-Length: 37\r\n\r\n")
    answer = api.request("HEAD", "/v1/openapi.yaml")
    assert status(answer) == 200
    assert b"Content-Type: application/yaml" in answer
    assert answer.endswith(b"\r\n\r\n") and b"Content-Length: " in answer
    answer = api.request("POST", "/v1/openapi.yaml")
    assert (status(answer), body(answer)) == (404, {"error": "no such resource"})


def test_refusals_are_sized_and_answers_are_chunked(api):
    """A refusal made before any handler runs has a Content-Length; a handler's answer is chunked, as before klein."""
    refused = api.request("GET", "/v1/nothing", ADMIN_KEY)
    assert b"Content-Length: 30\r\n" in refused
    answered = api.request("GET", "/v1/tokens/unknown", PROXY_KEY)
    assert b"Transfer-Encoding: chunked\r\n" in answered


class SlowStore(MemoryTokenStore):
    """A store whose removals wait until the test lets them finish."""

    def __init__(self):
        super().__init__()
        self.waiting = []

    def remove(self, token_hash):
        d = Deferred()
        self.waiting.append((d, token_hash))
        return d

    def finish(self):
        for d, token_hash in self.waiting:
            super().remove(token_hash).addBoth(d.callback)


def test_a_revocation_finishes_after_its_client_left(tmp_path):
    """When the client goes while a revocation waits on the store, it is still written to the feed and audited."""
    api = Api(tmp_path, store=SlowStore())
    channel, transport = api.connect()
    channel.dataReceived(
        b"DELETE /v1/tokens/gone HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n"
        % ADMIN_KEY.encode()
    )
    channel.connectionLost(Exception("client went away"))
    api.store.finish()
    assert transport.value() == b""
    assert [e["event"] for e in api.audit()] == ["token.revoked"]
    feed = body(api.request("GET", "/v1/revocations", PROXY_KEY))
    assert [e["kind"] for e in feed["revocations"]] == ["token"]


def test_a_streamed_answer_dropped_because_its_client_left_closes_its_source():
    """
    A download whose client left while the handler still worked (the file
    being opened): klein cancels the answer, and the file the handler opened
    for it is closed then, not left to the garbage collector.
    """
    from txvnc.consoleauth.routes.access import _to_the_end
    from txvnc.consoleauth.routes.answers import StreamedBody
    from txvnc.core.streamed import ThreadedBody

    class Source:
        closed = False

        def __iter__(self):
            return self

        def __next__(self):
            return b"x"

        def close(self):
            self.closed = True

    source, opened = Source(), Deferred()

    async def download():
        await opened
        return 200, StreamedBody(ThreadedBody(source, maybeDeferred), 1)

    answer = _to_the_end(None, None, download())
    answer.addErrback(lambda _: None)
    answer.cancel()  # klein: the client went away
    opened.callback(None)
    assert source.closed
