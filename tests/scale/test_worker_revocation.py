"""
Revocation reaches consoles in every worker of C{twistd txvnc --workers 2}:
each worker follows the revocation feed on its own, so a revoked instance's
consoles close with 4001 whichever worker holds them, and nobody else's.
"""

from __future__ import annotations

import os
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList

from tests.support.twistd import start_twistd

from .processes import KEY, children, open_console, until_every_worker
from .test_workers import round_trip, worker_of

pytestmark = pytest.mark.scale

#: Consoles per instance opened until both workers hold some of each.
MAX_TRIES = 40

#: Seconds from the revocation to the last close: one poll interval (1 s)
#: plus the time both workers take to close, with room for a busy machine.
REVOCATION_BOUND = 10.0


@pytest.fixture
def txvnc2(tmp_path):
    server = start_twistd(tmp_path, api_key=KEY, page=False, workers=2)
    yield server
    server.stop()


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_revoking_an_instance_closes_its_consoles_in_both_workers(txvnc2, vnc):
    """Both workers close the revoked instance's consoles with 4001 within a poll or two; the other instance's consoles, in both workers, keep relaying."""
    workers = sorted(children(txvnc2.process.pid))
    assert len(workers) == 2, txvnc2.log.text()
    held: dict[str, dict[int, list]] = {}
    for name in ("doomed", "kept"):

        async def console(name: str = name) -> tuple[int, tuple]:
            token = await txvnc2.mint_async(
                "127.0.0.1", vnc.address.port, ttl=600, instance_uuid=f"inst-{name}"
            )
            connected = vnc.next_connection()
            browser = await open_console(txvnc2.proxy_port, token)
            server_side = await connected
            return worker_of(server_side, workers), (browser, server_side)

        held[name] = await until_every_worker(workers, console, 1, MAX_TRIES)

    started = time.monotonic()
    response = await treq.delete(
        txvnc2.api_url + "/v1/instances/inst-doomed/tokens",
        headers={"Authorization": "Bearer " + KEY},
    )
    assert response.code == 204
    doomed = [b for consoles in held["doomed"].values() for b, _ in consoles]
    # A worker that does not follow the feed would leave its share open:
    # the wait fails at the bound instead of at the test's timeout.
    closing = DeferredList([b.closed for b in doomed], consumeErrors=True)
    results = await closing.addTimeout(REVOCATION_BOUND, reactor)
    assert time.monotonic() - started < REVOCATION_BOUND
    assert {code for _, (_, code, _) in results} == {4001}

    # The other instance's consoles, in both workers, still relay both ways.
    for consoles in held["kept"].values():
        for browser, server_side in consoles:
            assert not browser.closed.called
            await round_trip(browser, server_side, os.urandom(10_000))
            browser.sendClose(1000)
    await DeferredList([b.closed for c in held["kept"].values() for b, _ in c])
