"""
C{/readyz} on the public proxy listener says whether the node is ready and
nothing else: why it is not (a host name of the token API, "Connection was
refused") is for operators, on the API or metrics listener and in the log.
"""

from __future__ import annotations

import signal

import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from tests.support.processes import free_port
from tests.support.twistd import start_twistd_async
from txvnc.ops.health import Readiness, ops_children

WHY = "DNS lookup failed: internal-consoleauth.example.invalid"


async def _fail() -> None:
    raise RuntimeError(WHY)


async def _ok() -> None:
    return None


def site(readiness: Readiness, public: bool) -> StubTreq:
    root = Resource()
    for name, child in ops_children(readiness, public=public).items():
        root.putChild(name, child)
    return StubTreq(root)


@pytest_twisted.ensureDeferred
async def test_public_readyz_is_status_only() -> None:
    """The public /readyz answers 503 {"status": "not ready"} without the failing check or its reason, and 200 {"status": "ready"} when ready."""
    readiness = Readiness(Clock())
    readiness.add("token_api", _fail)
    response = await site(readiness, public=True).get("http://proxy/readyz")
    assert response.code == 503
    assert await response.json() == {"status": "not ready"}
    readiness.checks["token_api"] = _ok
    response = await site(readiness, public=True).get("http://proxy/readyz")
    assert response.code == 200
    assert await response.json() == {"status": "ready"}


@pytest_twisted.ensureDeferred
async def test_private_readyz_keeps_its_details() -> None:
    """The API and metrics listeners' /readyz still name each check and why it failed."""
    readiness = Readiness(Clock())
    readiness.add("token_api", _fail)
    response = await site(readiness, public=False).get("http://api/readyz")
    assert response.code == 503
    assert await response.json() == {"status": "not ready", "checks": {"token_api": WHY}}


@pytest_twisted.ensureDeferred
async def test_a_real_proxy_tells_strangers_only_its_status(tmp_path) -> None:
    """A twistd proxy whose token API is down answers its public /readyz with the status only; --metrics-listen and the log say why."""
    key_file = tmp_path / "api.key"
    key_file.write_text(f"proxy {'p' * 43}\n")
    key_file.chmod(0o600)
    dead, metrics = free_port(), free_port()
    server = await start_twistd_async(
        tmp_path,
        "--consoleauth-url", f"http://127.0.0.1:{dead}",
        "--metrics-listen", f"tcp:{metrics}:interface=127.0.0.1",
        api=False,
        api_key_file=key_file,
        ready=[rf"starting on {metrics}\b"],
    )  # fmt: skip
    try:
        mark = server.log.mark()
        response = await treq.get(f"http://127.0.0.1:{server.proxy_port}/readyz", persistent=False)
        assert response.code == 503
        assert await response.json() == {"status": "not ready"}
        await server.wait_for(r"not ready: .*token_api.*refused", mark)
        response = await treq.get(f"http://127.0.0.1:{metrics}/readyz", persistent=False)
        assert response.code == 503
        assert "refused" in (await response.json())["checks"]["token_api"]
    finally:
        server.signal(signal.SIGTERM)
        assert await server.ended() == 0
