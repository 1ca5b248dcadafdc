"""
GET /healthz on the proxy's port, for load balancers.
"""

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred

from .harness import Stack


@pytest.fixture
def stack():
    s = Stack()
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


@pytest_twisted.ensureDeferred
async def test_healthz_answers_ok_with_the_console_count(stack):
    """The proxy answers 200 with its status and the number of open consoles, uncached."""
    response = await treq.get(f"http://{stack.host}/healthz")
    assert response.code == 200
    assert response.headers.getRawHeaders("cache-control") == ["no-store"]
    assert await response.json() == {"status": "ok", "consoles": 0}


@pytest_twisted.ensureDeferred
async def test_healthz_head_has_no_body(stack):
    """HEAD /healthz is 200 with no body, for checks that only want the status."""
    response = await treq.head(f"http://{stack.host}/healthz")
    assert response.code == 200
    assert await response.content() == b""
