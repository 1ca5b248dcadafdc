"""
The brute-force guard of C{twistd txvnc --workers 2}: the workers share
C{--max-auth-failures}, so a guessing client gets about as many tries as
against one process, not twice as many.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.support.twistd import start_twistd

from .processes import KEY
from .test_worker_metrics import raw_upgrade

pytestmark = pytest.mark.scale

LIMIT = 4
ATTEMPTS = 24


@pytest.fixture
def txvnc2(tmp_path):
    server = start_twistd(
        tmp_path, "--max-auth-failures", str(LIMIT), api_key=KEY, page=False, workers=2
    )
    yield server
    server.stop()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_two_workers_let_through_no_more_failures_than_the_limit(txvnc2):
    """Of many wrong tokens from one address, about --max-auth-failures get their 403 across both workers (not twice that); the rest get 429."""
    statuses = [
        await raw_upgrade(txvnc2.proxy_port, f"token=wrong-{n}") for n in range(ATTEMPTS)
    ]
    assert set(statuses) <= {403, 429}, statuses
    # A guard answers its limit's worth of failures and the one that starts
    # the cool-down with 403: one process would give LIMIT + 1, each worker
    # its share + 1. Without sharing, two workers would give 2 * (LIMIT + 1).
    assert statuses.count(403) <= LIMIT + 2, statuses
    assert statuses.count(429) >= ATTEMPTS - LIMIT - 2, statuses
