"""
/healthz and /readyz: the resources in memory (StubTreq, Clock), and both
listeners of a real twistd.
"""

from __future__ import annotations

import signal

import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from tests.proxy.harness import KEY
from tests.support.twistd import start_twistd_async
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.ops.health import Readiness, WithOps, ops_children


def stub(readiness):
    api = ConsoleAuthResource(MemoryTokenStore(), KEY, Clock(), "http://proxy.test")
    return StubTreq(WithOps(api, ops_children(readiness)))


@pytest_twisted.ensureDeferred
async def test_healthz_is_always_200():
    """/healthz answers 200 even when a readiness check fails."""
    readiness = Readiness(Clock())
    readiness.add("store", lambda: _fail("store is down"))
    response = await stub(readiness).get("http://api/healthz")
    assert response.code == 200
    assert await response.json() == {"status": "ok"}


async def _fail(why):
    raise RuntimeError(why)


async def _ok():
    return None


@pytest_twisted.ensureDeferred
async def test_readyz_reports_each_check():
    """/readyz is 200 when every check passes and 503 naming the one that failed."""
    readiness = Readiness(Clock())
    readiness.add("store", _ok)
    http = stub(readiness)
    response = await http.get("http://api/readyz")
    assert response.code == 200
    assert await response.json() == {"status": "ready", "checks": {"store": "ok"}}

    readiness.add("token_api", lambda: _fail("http://api/healthz answered 502"))
    response = await http.get("http://api/readyz")
    assert response.code == 503
    body = await response.json()
    assert body["checks"] == {
        "store": "ok",
        "token_api": "http://api/healthz answered 502",
    }


def test_a_hanging_check_times_out():
    """A check that never answers fails after the check timeout instead of hanging /readyz."""
    clock = Clock()
    readiness = Readiness(clock, timeout=2.0)
    readiness.add("store", lambda: Deferred())
    http = stub(readiness)
    answers = []
    http.get("http://api/readyz").addBoth(answers.append)
    http.flush()
    assert answers == []
    clock.advance(2.0)
    http.flush()
    (response,) = answers
    assert response.code == 503


@pytest_twisted.ensureDeferred
async def test_readyz_is_503_while_draining():
    """Once shutdown starts, /readyz answers 503 so load balancers stop sending consoles."""
    readiness = Readiness(Clock())
    readiness.add("store", lambda: succeed(None))
    readiness.draining = True
    response = await stub(readiness).get("http://api/readyz")
    assert response.code == 503
    assert (await response.json())["checks"]["draining"] == "shutting down"


@pytest_twisted.ensureDeferred
async def test_api_routes_pass_through():
    """The token API behind the health resources still sees its own paths."""
    http = stub(Readiness(Clock()))
    response = await http.post(
        "http://api/v1/tokens",
        json={"host": "127.0.0.1", "port": 5900},
        headers={"Authorization": "Bearer " + KEY},
    )
    assert response.code == 201
    token = (await response.json())["token"]
    response = await http.get(
        f"http://api/v1/tokens/{token}", headers={"Authorization": "Bearer " + KEY}
    )
    assert response.code == 200
    response = await http.get("http://api/healthz/extra")
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_both_listeners_of_a_real_twistd(tmp_path):
    """A real twistd answers /healthz and /readyz on the proxy and API ports (the proxy's /readyz with its status only), and /metrics on the API port only."""
    server = await start_twistd_async(tmp_path)
    proxy_port, api_port = server.proxy_port, server.api_port
    try:
        for port in (proxy_port, api_port):
            base = f"http://127.0.0.1:{port}"
            response = await treq.get(base + "/healthz", persistent=False)
            assert response.code == 200, port
            response = await treq.get(base + "/readyz", persistent=False)
            body = await response.json()
            assert response.code == 200, body
            if port == proxy_port:
                assert body == {"status": "ready"}
            else:
                assert body["checks"] == {"store": "ok", "token_api": "ok"}
        response = await treq.get(
            f"http://127.0.0.1:{api_port}/metrics", persistent=False
        )
        assert response.code == 200
        assert "txvnc_consoles_open 0.0" in await response.text()
        response = await treq.get(
            f"http://127.0.0.1:{proxy_port}/metrics", persistent=False
        )
        assert response.code == 404
    finally:
        server.signal(signal.SIGTERM)
        assert await server.ended() == 0
