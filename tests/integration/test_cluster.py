"""
Consoleauth across real processes: two token APIs on one Redis, two proxies,
real WebSocket clients and a fake VNC server on loopback.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from tests.support.browser import Browser, connect_browser
from tests.support.twistd import Twistd
from txvnc.core.tokens import token_hash

from .conftest import ADMIN_KEY, PROXY_KEY, Cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: The issue's bound for revocation reaching open consoles.
REVOCATION_BOUND = 5.0


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


async def call(method: str, url: str, key: str = ADMIN_KEY, body=None):
    kwargs = {"headers": auth(key), "persistent": False}
    if body is not None:
        kwargs["json"] = body
    response = await treq.request(method, url, **kwargs)
    content = await treq.content(response)
    return response.code, (json.loads(content) if content else None)


async def mint(cluster: Cluster, vnc, api: int = 0, **fields) -> str:
    fields = {"instance_uuid": "i-1", **fields}
    token = await cluster.apis[api].mint_async("127.0.0.1", vnc.address.port, **fields)
    cluster.secrets.add(token)
    return token


async def open_browser(proxy: Twistd, token: str) -> Browser:
    return await connect_browser(proxy.proxy_port, f"token={token}")


async def opened(browser: Browser) -> bool:
    try:
        await browser.opened
    except ConnectionError:
        return False
    return True


def pause(seconds: float) -> Deferred:
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def wait_for_polls(cluster: Cluster, count: int = 2) -> None:
    """
    Until each API has answered C{count} more revocation polls: the proxies'
    loop is sequential, so every answer before the last was acted on.
    """
    for api in cluster.apis:
        mark = api.log.mark()
        for _ in range(count):
            found = api.log.wait_for(
                r'"GET /v1/revocations\?after=\d+ HTTP/1.1" 200', mark
            )
            mark = api.log.lines().index(found.string, mark) + 1


async def wait_sessions(
    cluster: Cluster, instance: str, count: int, deadline: float = 10.0
):
    """
    The instance's consoles once the list shows C{count} (proxies report at
    their next poll; there is no event to wait on from here).
    """
    end = time.monotonic() + deadline
    url = f"{cluster.apis[1].api_url}/v1/sessions?instance_uuid={instance}"
    while True:
        status, answer = await call("GET", url)
        assert status == 200
        if len(answer["sessions"]) >= count or time.monotonic() > end:
            return answer["sessions"]
        await pause(0.1)


@pytest_twisted.ensureDeferred
async def test_two_apis_share_tokens(cluster, vnc):
    """A token minted through one API is checked, listed and revoked through the other."""
    token = await mint(cluster, vnc, api=0, instance_uuid="shared-1")
    other = cluster.apis[1].api_url
    status, info = await call("GET", f"{other}/v1/tokens/{token}", PROXY_KEY)
    assert (status, info["port"]) == (200, vnc.address.port)
    status, listing = await call("GET", f"{other}/v1/tokens?instance_uuid=shared-1")
    assert [t["token_hash"] for t in listing["tokens"]] == [token_hash(token)]
    assert (await call("DELETE", f"{other}/v1/tokens/{token}"))[0] == 204
    status, _ = await call("GET", f"{cluster.apis[0].api_url}/v1/tokens/{token}", PROXY_KEY)
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_proxy_key_cannot_mint_or_revoke(cluster, vnc):
    """The proxies' key gets 403 from mint and revoke on a real API process."""
    url = cluster.apis[0].api_url
    body = {"host": "127.0.0.1", "port": vnc.address.port}
    assert (await call("POST", url + "/v1/tokens", PROXY_KEY, body))[0] == 403
    assert (await call("DELETE", url + "/v1/tokens/x", PROXY_KEY))[0] == 403
    assert (await call("DELETE", url + "/v1/instances/i/tokens", PROXY_KEY))[0] == 403


@pytest_twisted.ensureDeferred
async def test_revoking_a_token_closes_its_consoles_on_every_proxy(cluster, vnc):
    """Revoking a token through API 2 closes its consoles on both proxies with 4001 within 5 s."""
    token = await mint(cluster, vnc, instance_uuid="rev-token")
    browsers = [await open_browser(p, token) for p in cluster.proxies]
    assert all([await opened(b) for b in browsers])
    started = time.monotonic()
    status, _ = await call("DELETE", f"{cluster.apis[1].api_url}/v1/tokens/{token}")
    assert status == 204
    results = await gatherResults([b.closed for b in browsers])
    elapsed = time.monotonic() - started
    assert [(code, reason) for _, code, reason in results] == [
        (4001, "Console access was revoked")
    ] * 2
    assert elapsed < REVOCATION_BOUND, elapsed
    for proxy in cluster.proxies:
        proxy.log.wait_for(r"console closed, instance rev-token.*: token revoked")


@pytest_twisted.ensureDeferred
async def test_revoking_an_instance_closes_only_its_consoles(cluster, vnc):
    """Revoking an instance closes its consoles on both proxies; another instance's stays open."""
    mine = [await mint(cluster, vnc, instance_uuid="rev-inst") for _ in range(2)]
    theirs = await mint(cluster, vnc, instance_uuid="keep-inst")
    doomed = [
        await open_browser(cluster.proxies[0], mine[0]),
        await open_browser(cluster.proxies[1], mine[1]),
    ]
    kept = await open_browser(cluster.proxies[1], theirs)
    assert all([await opened(b) for b in [*doomed, kept]])
    started = time.monotonic()
    status, _ = await call(
        "DELETE", f"{cluster.apis[0].api_url}/v1/instances/rev-inst/tokens"
    )
    assert status == 204
    results = await gatherResults([b.closed for b in doomed])
    assert time.monotonic() - started < REVOCATION_BOUND
    assert {code for _, code, _ in results} == {4001}
    # The other instance's console still relays: bytes reach the VNC server.
    kept.sendMessage(b"still here", isBinary=True)
    kept_side = await vnc.received_at_least(len(b"still here"))
    assert not kept_side.lost.called
    # A token minted for the revoked instance afterwards opens a console,
    # which stays open through two more polls of the feed on each proxy.
    fresh = await mint(cluster, vnc, instance_uuid="rev-inst")
    again = await open_browser(cluster.proxies[0], fresh)
    assert await opened(again)
    wait_for_polls(cluster)
    assert not again.closed.called
    assert not kept.closed.called
    again.sendClose(1000)
    kept.sendClose(1000)
    await gatherResults([again.closed, kept.closed])


@pytest_twisted.ensureDeferred
async def test_single_use_race_between_two_proxies(cluster, vnc):
    """A single-use token raced through both proxies at once opens exactly one console, every time."""
    for _ in range(5):
        token = await mint(cluster, vnc, single_use=True)
        browsers = await gatherResults(
            [Deferred.fromCoroutine(open_browser(p, token)) for p in cluster.proxies]
        )
        outcomes = [await opened(b) for b in browsers]
        assert sorted(outcomes) == [False, True]
        winner = browsers[outcomes.index(True)]
        winner.sendClose(1000)
        await winner.closed


@pytest_twisted.ensureDeferred
async def test_sessions_are_listed_and_one_is_closed(cluster, vnc):
    """Both proxies' consoles are listed by instance; closing one by id ends it with 4006."""
    token = await mint(cluster, vnc, instance_uuid="sess-inst")
    browsers = [await open_browser(p, token) for p in cluster.proxies]
    assert all([await opened(b) for b in browsers])
    await wait_sessions(cluster, "sess-inst", 2)
    status, answer = await call(
        "GET", f"{cluster.apis[0].api_url}/v1/sessions?instance_uuid=sess-inst"
    )
    assert status == 200
    assert sorted(s["proxy"] for s in answer["sessions"]) == ["proxy-a", "proxy-b"]
    victim = next(s for s in answer["sessions"] if s["proxy"] == "proxy-b")
    assert victim["instance_uuid"] == "sess-inst"
    assert victim["target"] == f"127.0.0.1:{vnc.address.port}"
    status, _ = await call(
        "DELETE", f"{cluster.apis[0].api_url}/v1/sessions/{victim['id']}"
    )
    assert status == 204
    _, code, reason = await browsers[1].closed
    assert (code, reason) == (4006, "The console was closed by an administrator")
    assert not browsers[0].closed.called
    browsers[0].sendClose(1000)
    await browsers[0].closed
    status, _ = await call("DELETE", f"{cluster.apis[0].api_url}/v1/sessions/no-such")
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_keys_without_dropping_consoles(cluster, vnc):
    """After SIGHUP an added admin key works and a removed one does not; open consoles carry on."""
    token = await mint(cluster, vnc, instance_uuid="hup")
    browser = await open_browser(cluster.proxies[0], token)
    assert await opened(browser)
    new_key = "cluster-rotated-admin-" + "r" * 20
    cluster.secrets.add(new_key)
    api = cluster.apis[0]
    mark = api.log.mark()
    cluster.keys_file.write_text(f"admin {new_key}\nproxy {PROXY_KEY}\n")
    api.signal(signal.SIGHUP)
    api.log.wait_for(r"API keys reloaded from .*: 1 admin, 1 proxy", since=mark)
    url = api.api_url + "/v1/tokens"
    body = {"host": "127.0.0.1", "port": vnc.address.port}
    assert (await call("POST", url, new_key, body))[0] == 201
    assert (await call("POST", url, ADMIN_KEY, body))[0] == 401
    browser.sendMessage(b"after reload", isBinary=True)
    assert await vnc.received_at_least(len(b"after reload"))
    assert not browser.closed.called
    # Put the old file back for the other tests.
    mark = api.log.mark()
    cluster.keys_file.write_text(f"admin {ADMIN_KEY}\nproxy {PROXY_KEY}\n")
    api.signal(signal.SIGHUP)
    api.log.wait_for(r"API keys reloaded", since=mark)
    browser.sendClose(1000)
    await browser.closed


@pytest_twisted.ensureDeferred
async def test_audit_logs_record_the_story_by_hash(cluster, vnc):
    """Mint, console open and close, and revocation are audit lines naming the token by hash."""
    token = await mint(cluster, vnc, instance_uuid="audit-inst")
    browser = await open_browser(cluster.proxies[0], token)
    assert await opened(browser)
    await call("DELETE", f"{cluster.apis[0].api_url}/v1/tokens/{token}")
    await browser.closed
    hashed = token_hash(token)

    def events(node):
        lines = node.audit_path.read_text().splitlines()
        return [json.loads(line) for line in lines if hashed in line]

    api_events = [e["event"] for e in events(cluster.apis[0])]
    assert api_events == ["token.minted", "token.revoked"]
    cluster.proxies[0].log.wait_for(r"console closed, instance audit-inst")
    proxy_events = events(cluster.proxies[0])
    assert [e["event"] for e in proxy_events] == ["console.opened", "console.closed"]
    closed = proxy_events[1]
    assert closed["instance_uuid"] == "audit-inst"
    assert closed["why"] == "token revoked"
    assert closed["actor"] == "proxy"
    assert token not in cluster.proxies[0].audit_path.read_text()
