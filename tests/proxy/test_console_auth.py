"""
The proxy's side of consoleauth over real loopback sockets: target policy at
connect, single use, the brute-force guard, and revocation closing an open
console.
"""

import pytest_twisted
import treq
from twisted.internet.defer import Deferred, gatherResults

from txvnc.consoleauth.tokens import TokenRecord, new_token
from txvnc.core.targets import TargetPolicy
from txvnc.core.tokens import token_hash
from txvnc.proxy.admission import INVALID_TOKEN, TARGET_NOT_ALLOWED, TOO_MANY_FAILURES

from .harness import KEY, Stack


def make_stack(**options):
    return Stack(**options)


async def refused(stack, vnc, query, status, reason):
    code, phrase = await stack.raw_upgrade(query)
    assert (code, phrase) == (status, reason)
    assert vnc.connections == []


@pytest_twisted.ensureDeferred
async def test_proxy_rechecks_the_target_policy(vnc):
    """A token naming a target outside the proxy's policy is refused before any connect."""
    stack = make_stack(proxy_policy=TargetPolicy.parse(["127.0.0.1:5900-5999"]))
    try:
        # As if another API, with a looser policy, had minted it.
        token = new_token()
        await stack.store.add(
            TokenRecord(
                token_hash(token),
                "127.0.0.1",
                vnc.address.port,
                "i-1",
                "novnc",
                0.0,
                4e9,
            )
        )
        await refused(stack, vnc, f"token={token}", 403, TARGET_NOT_ALLOWED)
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_proxy_rechecks_unix_targets(vnc, tmp_path):
    """A token naming a unix socket outside the proxy's --allowed-unix-dir is refused like any foreign target."""
    stack = make_stack(allowed_unix_dirs=(str(tmp_path / "allowed"),))
    try:
        # As if another API, with other allowed directories, had minted it.
        token = new_token()
        await stack.store.add(
            TokenRecord(
                token_hash(token),
                "",
                0,
                "i-1",
                "novnc",
                0.0,
                4e9,
                options={"unix_path": str(tmp_path / "elsewhere" / "vnc.sock")},
            )
        )
        await refused(stack, vnc, f"token={token}", 403, TARGET_NOT_ALLOWED)
        assert not stack.factory.counter.for_token(token_hash(token))
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_single_use_token_opens_one_console(vnc):
    """Of two browsers racing with one single-use token, exactly one gets a console."""
    stack = make_stack()
    try:
        response = await treq.post(
            stack.api_url + "/v1/tokens",
            json={"host": "127.0.0.1", "port": vnc.address.port, "single_use": True},
            headers={"Authorization": "Bearer " + KEY},
        )
        token = (await response.json())["token"]
        browsers = await gatherResults(
            [
                Deferred.fromCoroutine(stack.open_browser(f"token={token}"))
                for _ in range(2)
            ]
        )
        outcomes = []
        for browser in browsers:
            try:
                await browser.opened
                outcomes.append("opened")
            except ConnectionError:
                outcomes.append("refused")
        assert sorted(outcomes) == ["opened", "refused"]
        assert len(vnc.connections) <= 1
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_too_many_failures_get_429_but_a_valid_token_opens(vnc):
    """Over real sockets: past the failure budget a valid token from the same address still opens a console, and the next guess gets 429."""
    stack = make_stack(max_auth_failures=20)
    try:
        token = await stack.mint(vnc.address.port)
        for n in range(21):
            await refused(stack, vnc, f"token=guess-{n}", 403, INVALID_TOKEN)
        assert stack.factory.guard.blocked("127.0.0.1")
        connected = vnc.next_connection()
        browser = await stack.open_browser(f"token={token}")
        await browser.opened
        await connected
        browser.sendClose(1000)
        await browser.closed
        # A guess waits its turn (3 s on) and is answered 429.
        code, phrase = await stack.raw_upgrade("token=guess-x")
        assert (code, phrase) == (429, TOO_MANY_FAILURES)
        assert len(vnc.connections) == 1
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_revoking_the_token_closes_the_open_console(vnc):
    """An open console closes with 4001 and the reason once its token is revoked."""
    stack = make_stack(follow_interval=0.05)
    try:
        token = await stack.mint(vnc.address.port)
        connected = vnc.next_connection()
        browser = await stack.open_browser(f"token={token}")
        await browser.opened
        side = await connected
        response = await treq.delete(
            f"{stack.api_url}/v1/tokens/{token}",
            headers={"Authorization": "Bearer " + KEY},
        )
        assert response.code == 204
        _was_clean, code, reason = await browser.closed
        assert (code, reason) == (4001, "Console access was revoked")
        await side.lost
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_killing_a_session_closes_it_with_4006(vnc):
    """DELETE /v1/sessions/{id} closes that console with 4006 and leaves others open."""
    stack = make_stack(follow_interval=0.05)
    try:
        token = await stack.mint(vnc.address.port)
        first = await stack.open_browser(f"token={token}")
        await first.opened
        second = await stack.open_browser(f"token={token}")
        await second.opened
        headers = {"Authorization": "Bearer " + KEY}
        await stack.follower.poll()  # report now rather than at the next tick
        response = await treq.get(stack.api_url + "/v1/sessions", headers=headers)
        sessions = (await response.json())["sessions"]
        assert len(sessions) == 2
        assert {s["proxy"] for s in sessions} == {"stack-proxy"}
        victim = next(
            c.conn_id
            for c in stack.factory.consoles
            if c.client.endswith(str(first.transport.getHost().port))
        )
        response = await treq.delete(
            f"{stack.api_url}/v1/sessions/{victim}", headers=headers
        )
        assert response.code == 204
        _, code, reason = await first.closed
        assert (code, reason) == (4006, "The console was closed by an administrator")
        assert not second.closed.called
    finally:
        await stack.stop()
