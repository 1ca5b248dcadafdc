"""
txvnc as a nova cell's console proxy, against nova's own code: tokens that
nova mints (ConsoleAuthToken.authorize) into a database nova's migrations
made open consoles through C{twistd txvnc --nova-config}; what nova deletes
closes them.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from tests.hostile.wsclient import upgrade_request
from tests.support.browser import connect_browser
from tests.support.novacell import CHECK_TIMEOUT, Nova
from tests.support.twistd import start_twistd_async
from txvnc.core.tokens import token_ref

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: The issue's bound for nova's revocations reaching open consoles.
REVOCATION_BOUND = 5.0


def pause(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def handshake_status(nova: Nova, path: str, **headers: str) -> int:
    """
    The HTTP status a browser's WebSocket handshake for C{path} gets.
    """
    host = f"127.0.0.1:{nova.txvnc.proxy_port}"
    headers = {"Origin": f"http://{host}", **headers}
    with socket.create_connection(("127.0.0.1", nova.txvnc.proxy_port), 10) as s:
        s.sendall(upgrade_request(host, path, headers))
        status_line = s.makefile("rb").readline()
    return int(status_line.split()[1])


async def token_check(nova: Nova, token: str) -> tuple[int, dict, float]:
    """
    The console page's POST /token-check: status, answer, seconds taken.
    """
    started = time.monotonic()
    response = await treq.post(
        f"{nova.txvnc.base_url}/token-check",
        json.dumps({"token": token}).encode(),
        headers={
            "Content-Type": "application/json",
            "Origin": nova.txvnc.base_url,
        },
        persistent=False,
    )
    body = json.loads(await treq.content(response))
    return response.code, body, time.monotonic() - started


def token_of(access_url: str) -> str:
    """
    The token inside nova's access URL (C{?path=%3Ftoken%3D...}).
    """
    path = parse_qs(urlsplit(access_url).query)["path"][0]
    return parse_qs(urlsplit(path).query)["token"][0]


async def opened(browser) -> bool:
    try:
        await browser.opened
    except ConnectionError:
        return False
    return True


@pytest.fixture
def instance(nova: Nova) -> str:
    return nova.cell.add_instance()


def test_novas_access_url_is_served(nova: Nova, instance: str, vnc) -> None:
    """
    nova's access URL is vnc_lite.html?path=%3Ftoken%3D<token> on txvnc's
    base; txvnc answers it with its console page (and vnc_auto.html too).
    """
    minted = nova.mint(instance, vnc.address.port)
    url = minted["access_url"]
    assert url.startswith(f"{nova.txvnc.base_url}/vnc_lite.html?path=%3Ftoken%3D")
    assert token_of(url) == minted["token"]
    import urllib.request

    for page in (url, f"{nova.txvnc.base_url}/vnc_auto.html?token={minted['token']}"):
        with urllib.request.urlopen(page, timeout=10) as answer:
            assert answer.status == 200
            assert b"console.js" in answer.read()


@pytest.mark.parametrize(
    "where",
    ["query on /", "query on /websockify", "path parameter", "cookie after a bad one"],
)
@pytest_twisted.ensureDeferred
async def test_novas_token_opens_a_console(nova: Nova, instance: str, vnc, where):
    """
    A token nova minted opens a console wherever noVNC or nova's other
    clients put it, as often as it is used before it expires.
    """
    token = nova.mint(instance, vnc.address.port)["token"]
    path, query, headers = "/", f"token={token}", {}
    if where == "query on /websockify":
        path = "/websockify"
    elif where == "path parameter":
        query = "path=" + quote(f"?token={token}", safe="")
    elif where == "cookie after a bad one":
        query, headers = "", {"Cookie": f'bad"cookie; token={token}'}
    for _ in range(2):
        browser = await connect_browser(
            nova.txvnc.proxy_port, query, path=path, headers=headers
        )
        assert await opened(browser), where
        await vnc.next_connection()
        browser.sendClose()
        await browser.closed


@pytest_twisted.ensureDeferred
async def test_unknown_expired_and_deleted_are_refused_before_the_upgrade(
    nova: Nova, vnc
) -> None:
    """
    403 before the upgrade for a token nova never minted, one that
    expired, and one whose instance nova deleted; the log says so in
    nova's words without the token.
    """
    instance = nova.cell.add_instance()
    live = nova.mint(instance, vnc.address.port)["token"]
    short = nova.mint(instance, vnc.address.port, ttl=1)["token"]
    doomed_instance = nova.cell.add_instance()
    doomed = nova.mint(doomed_instance, vnc.address.port)["token"]
    nova.cell.delete_instance(doomed_instance)
    unknown = str(uuid.uuid4())
    assert await deferToThread(handshake_status, nova, f"/?token={live}") == 101
    # nova's expiry is whole seconds: wait for the token to expire by
    # asking, not by sleeping a guessed time.
    deadline = time.monotonic() + 10
    while (await token_check(nova, short))[0] == 200:
        assert time.monotonic() < deadline, "the 1 s token never expired"
        await pause(0.2)
    mark = nova.txvnc.log.mark()
    for token in (unknown, short, doomed):
        assert await deferToThread(handshake_status, nova, f"/?token={token}") == 403
        status, answer, _ = await token_check(nova, token)
        assert (status, answer) == (403, {"error": "The token is invalid or has expired"})
        nova.txvnc.log.wait_for(
            rf"The token {token_ref(token)} is invalid or has expired", mark
        )


@pytest_twisted.ensureDeferred
async def test_nova_cleaning_an_instance_closes_its_consoles(nova: Nova, vnc) -> None:
    """
    nova's clean_console_auths_for_instance (instance deleted or moved)
    closes the instance's open consoles with 4001 within 5 s; another
    instance's console stays open.
    """
    instance, other = nova.cell.add_instance(), nova.cell.add_instance()
    tokens = [nova.mint(instance, vnc.address.port)["token"] for _ in range(2)]
    kept = nova.mint(other, vnc.address.port)["token"]
    browsers = []
    for token in [*tokens, kept]:
        browser = await connect_browser(nova.txvnc.proxy_port, f"token={token}", path="/")
        assert await opened(browser)
        browsers.append(browser)
    started = time.monotonic()
    await deferToThread(nova.cell.clean_instance, instance)
    for browser in browsers[:2]:
        _, code, reason = await browser.closed
        assert (code, reason) == (4001, "Console access was revoked")
    elapsed = time.monotonic() - started
    assert elapsed < REVOCATION_BOUND, elapsed
    assert not browsers[2].closed.called
    browsers[2].sendClose()
    await browsers[2].closed
    nova.txvnc.log.wait_for(rf"nova deleted a token of instance {instance}")


@pytest_twisted.ensureDeferred
async def test_every_proxy_of_the_cell_closes_them(nova: Nova, vnc) -> None:
    """
    Two txvnc processes on one cell's nova.conf (behind a balancer), a
    console of one token on each: nova cleaning the instance closes both.
    """
    second = await start_twistd_async(
        nova.directory / "second",
        "--nova-config", str(nova.conf),
        "--revocation-poll-interval", "0.5",
        store=None,
        name="second",
    )  # fmt: skip
    try:
        instance = nova.cell.add_instance()
        token = nova.mint(instance, vnc.address.port)["token"]
        second.remember(token)
        browsers = [
            await connect_browser(proxy.proxy_port, f"token={token}", path="/")
            for proxy in (nova.txvnc, second)
        ]
        assert [await opened(b) for b in browsers] == [True, True]
        started = time.monotonic()
        await deferToThread(nova.cell.clean_instance, instance)
        for browser in browsers:
            _, code, _ = await browser.closed
            assert code == 4001
        assert time.monotonic() - started < REVOCATION_BOUND
    finally:
        await deferToThread(second.stop)


@pytest_twisted.ensureDeferred
async def test_nova_deleting_an_instance_closes_its_consoles(nova: Nova, vnc) -> None:
    instance = nova.cell.add_instance()
    token = nova.mint(instance, vnc.address.port)["token"]
    browser = await connect_browser(nova.txvnc.proxy_port, f"token={token}", path="/")
    assert await opened(browser)
    started = time.monotonic()
    await deferToThread(nova.cell.delete_instance, instance)
    _, code, _ = await browser.closed
    assert code == 4001 and time.monotonic() - started < REVOCATION_BOUND


@pytest_twisted.ensureDeferred
async def test_database_gone_is_503_within_the_check_timeout_then_recovers(
    nova: Nova, vnc
) -> None:
    instance = nova.cell.add_instance()
    token = nova.mint(instance, vnc.address.port)["token"]
    away = nova.db.with_suffix(".away")
    os.rename(nova.db, away)
    try:
        status, answer, took = await token_check(nova, token)
        assert status == 503, answer
        assert took < CHECK_TIMEOUT + 0.5, took
        assert await deferToThread(handshake_status, nova, f"/?token={token}") == 503
    finally:
        os.rename(away, nova.db)
    status, answer, _ = await token_check(nova, token)
    assert (status, answer) == (200, {"status": "valid"})
    nova.txvnc.log.wait_for(r"the store is unavailable: nova database")


@pytest_twisted.ensureDeferred
async def test_txvnc_never_writes_novas_database(nova: Nova, vnc) -> None:
    """
    Checks, consoles, revocation watching and refused writes leave the
    database file's bytes and modification time as nova left them.
    """
    instance = nova.cell.add_instance()
    token = nova.mint(instance, vnc.address.port)["token"]
    before = (nova.db.read_bytes(), os.stat(nova.db).st_mtime_ns)
    for _ in range(3):
        assert (await token_check(nova, token))[0] == 200
        browser = await connect_browser(nova.txvnc.proxy_port, f"token={token}", path="/")
        assert await opened(browser)
        browser.sendClose()
        await browser.closed
    api = nova.txvnc.api_url
    key = {"Authorization": "Bearer " + nova.txvnc.api_key}
    minted = await treq.post(
        f"{api}/v1/tokens", json={"host": "127.0.0.1", "port": 5900},
        headers=key, persistent=False,
    )  # fmt: skip
    assert minted.code == 405
    assert "nova" in json.loads(await treq.content(minted))["error"]
    revoked = await treq.delete(f"{api}/v1/tokens/{token}", headers=key, persistent=False)
    assert revoked.code == 405
    await treq.content(revoked)
    assert (nova.db.read_bytes(), os.stat(nova.db).st_mtime_ns) == before


def test_unhonoured_options_are_named_once(nova: Nova) -> None:
    lines = [line for line in nova.txvnc.log.lines() if "not honoured" in line]
    assert len(lines) == 1 and "[DEFAULT] record" in lines[0]
