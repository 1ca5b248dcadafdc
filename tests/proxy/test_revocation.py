"""
The revocation follower, against the real token API in memory (StubTreq) on
a Clock.
"""

import json

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from txvnc.client import ConsoleAuthClient
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.core.tokens import token_hash
from txvnc.proxy import revocation
from txvnc.proxy.revocation import RevocationFollower, matches

KEY = "follower-key"


class FakeConsole:
    """Stands in for a Console: records how it was closed."""

    def __init__(self, conn_id, token, instance, cursor=0):
        self.conn_id = conn_id
        self.token_hash = token_hash(token)
        self.instance_uuid = instance
        self.revocation_cursor = cursor
        self.revoked = []

    def revoke(self, kind):
        self.revoked.append(kind)

    def report(self):
        return {
            "id": self.conn_id,
            "instance_uuid": self.instance_uuid,
            "token_hash": self.token_hash,
            "client": "192.0.2.9:1",
            "host": "10.0.0.6",
            "port": 5900,
            "opened_at": 1.0,
        }


class Setup:
    def __init__(self):
        self.clock = Clock()
        self.store = MemoryTokenStore()
        self.api = ConsoleAuthResource(self.store, KEY, self.clock, "http://p")
        http = StubTreq(self.api)
        self.client = ConsoleAuthClient(http, "http://api", KEY, self.clock)
        self.consoles = set()
        self.follower = RevocationFollower(
            self.clock, self.client, self.consoles, "node-1", report_interval=10
        )

    def open(self, console):
        self.consoles.add(console)
        return self.follower.opened(console)


@pytest.fixture
def s():
    return Setup()


def test_matches_only_entries_after_the_consoles_cursor():
    """An entry closes a console only if it came after the console's token was taken."""
    c = FakeConsole("s1", "tok", "i-1", cursor=5)
    assert matches(c, "token", token_hash("tok"), 6)
    assert matches(c, "instance", "i-1", 6)
    assert matches(c, "session", "s1", 6)
    assert not matches(c, "instance", "i-1", 5)
    assert not matches(c, "instance", "i-2", 6)
    assert not matches(c, "token", token_hash("other"), 6)
    assert not matches(c, "unknown", "s1", 6)


@pytest_twisted.ensureDeferred
async def test_revocations_close_matching_consoles(s):
    """Token, instance and session entries close exactly the consoles they name."""
    a = FakeConsole("s1", "tok-a", "i-1")
    b = FakeConsole("s2", "tok-b", "i-2")
    c = FakeConsole("s3", "tok-c", "i-3")
    for console in (a, b, c):
        assert s.open(console)
    await s.store.add_revocation("token", token_hash("tok-a"), 0)
    await s.store.add_revocation("instance", "i-2", 0)
    await s.follower.poll()
    assert (a.revoked, b.revoked, c.revoked) == (["token"], ["instance"], [])
    await s.store.add_revocation("session", "s3", 0)
    await s.follower.poll()
    assert c.revoked == ["session"]
    assert s.follower.cursor == 3


@pytest_twisted.ensureDeferred
async def test_console_granted_after_a_revocation_stays_open(s):
    """An instance revoked before a console's token was taken does not close it."""
    await s.store.add_revocation("instance", "i-1", 0)
    fresh = FakeConsole("s1", "new-token", "i-1", cursor=1)
    assert s.open(fresh)
    await s.follower.poll()
    assert fresh.revoked == []


@pytest_twisted.ensureDeferred
async def test_console_opening_after_its_entry_arrived_is_refused(s):
    """A console whose token was taken before an entry already seen is refused on open."""
    old = FakeConsole("s1", "tok", "i-1", cursor=0)
    assert s.open(FakeConsole("s0", "x", "i-0"))
    await s.store.add_revocation("token", token_hash("tok"), 0)
    await s.follower.poll()
    assert s.open(old) is False


@pytest_twisted.ensureDeferred
async def test_reports_sessions_when_they_change_and_periodically(s):
    """Open consoles reach the API's list at the next poll, and the report is renewed."""
    await s.follower.poll()
    assert await s.store.sessions(0) == []
    s.open(FakeConsole("s1", "tok", "i-1"))
    await s.follower.poll()
    assert [x.id for x in await s.store.sessions(s.clock.seconds())] == ["s1"]
    s.clock.advance(29)
    await s.follower.poll()  # renewed at 10 s, good for 30 s more
    s.clock.advance(29)
    assert [x.id for x in await s.store.sessions(s.clock.seconds())] == ["s1"]


@pytest_twisted.ensureDeferred
async def test_feed_restart_rejudges_every_console(s):
    """When the feed's numbers go backwards, every open console is judged by the new feed."""
    c = FakeConsole("s1", "tok", "i-1", cursor=50)
    s.open(c)
    s.follower.cursor = 50
    await s.store.add_revocation("instance", "i-1", 0)
    await s.follower.poll()
    assert c.revoked == ["instance"]


@pytest_twisted.ensureDeferred
async def test_api_outage_is_logged_once_and_survived(s):
    """An unreachable API is logged once, and following resumes when it is back."""
    c = FakeConsole("s1", "tok", "i-1")
    s.open(c)
    real = s.client._http
    s.client._http = StubTreq(ConsoleAuthResource(s.store, "other-key", s.clock, "x"))
    await s.follower.poll()
    await s.follower.poll()
    assert s.follower._failing
    s.client._http = real
    await s.store.add_revocation("instance", "i-1", 0)
    await s.follower.poll()
    assert c.revoked == ["instance"] and not s.follower._failing


def test_service_polls_on_its_clock(s):
    """Started, the follower polls every interval on the clock it was given."""
    calls = []

    async def poll():
        calls.append(s.clock.seconds())

    s.follower.poll = poll
    s.follower.startService()
    s.clock.advance(1)
    s.clock.advance(1)
    s.follower.stopService()
    s.clock.advance(5)
    assert calls == [1.0, 2.0]


class Recording:
    """A treq-like client that notes each request's method and JSON body size."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def request(self, method, url, **kwargs):
        body = kwargs.get("json")
        self.calls.append((method, len(json.dumps(body)) if body is not None else 0))
        return self.inner.request(method, url, **kwargs)

    def reports(self):
        return [(m, n) for m, n in self.calls if m in ("PUT", "PATCH")]


def recorded(s, resource=None):
    http = Recording(StubTreq(resource or s.api))
    s.client._http = http
    return http


async def listed(s):
    return sorted(x.id for x in await s.store.sessions(s.clock.seconds()))


@pytest_twisted.ensureDeferred
async def test_reports_send_the_changes_not_the_whole_list(s):
    """
    After the first whole list, a report carries only the consoles opened
    and closed since the last one: its size follows the changes, not the
    consoles open, and the API's list stays complete.
    """
    http = recorded(s)
    consoles = [FakeConsole(f"s{i}", f"tok{i}", "i-1") for i in range(200)]
    for c in consoles:
        s.open(c)
    await s.follower.poll()
    s.open(FakeConsole("new", "tok-new", "i-2"))
    s.consoles.discard(consoles[0])
    s.follower.closed(consoles[0])
    await s.follower.poll()
    (put, whole), (patch, change) = http.reports()
    assert (put, patch) == ("PUT", "PATCH")
    assert change < 600 < 200 * 150 < whole
    assert set(await listed(s)) == {f"s{i}" for i in range(1, 200)} | {"new"}
    s.clock.advance(10)
    await s.follower.poll()  # due, nothing changed: an empty change renews it
    assert http.reports()[-1][0] == "PATCH" and http.reports()[-1][1] < 150


@pytest_twisted.ensureDeferred
async def test_an_api_that_lost_the_list_gets_it_whole_at_once(s):
    """A change report the API cannot add up (409: it restarted) is followed by the whole list in the same poll."""
    http = recorded(s)
    s.open(FakeConsole("a", "tok-a", "i-1"))
    await s.follower.poll()
    s.store._nodes.clear()  # the API's store restarted empty
    s.open(FakeConsole("b", "tok-b", "i-1"))
    await s.follower.poll()
    assert [m for m, _ in http.reports()] == ["PUT", "PATCH", "PUT"]
    assert await listed(s) == ["a", "b"]


class OlderAPI(Resource):
    """The token API before change reports: PATCH is a 405."""

    isLeaf = True

    def __init__(self, api):
        super().__init__()
        self.api = api

    def render(self, request):
        if request.method == b"PATCH":
            request.setResponseCode(405)
            return b'{"error": "method PATCH not allowed"}'
        return self.api.render(request)


@pytest_twisted.ensureDeferred
async def test_an_older_api_keeps_getting_whole_lists(s):
    """An API that answers a change report with 405 is sent whole lists from then on."""
    http = recorded(s, OlderAPI(s.api))
    s.open(FakeConsole("a", "tok-a", "i-1"))
    await s.follower.poll()
    s.open(FakeConsole("b", "tok-b", "i-1"))
    await s.follower.poll()
    s.open(FakeConsole("c", "tok-c", "i-1"))
    await s.follower.poll()
    assert [m for m, _ in http.reports()] == ["PUT", "PATCH", "PUT", "PUT"]
    assert await listed(s) == ["a", "b", "c"]


def test_an_entry_looks_only_at_the_consoles_it_names(s, monkeypatch):
    """Revocation matching goes through the index: one entry, one console looked at, among thousands."""
    for i in range(5000):
        s.open(FakeConsole(f"s{i}", f"tok{i}", f"i-{i % 50}"))
    looked = []
    real = revocation.matches
    monkeypatch.setattr(
        revocation, "matches", lambda c, *a: looked.append(c) or real(c, *a)
    )
    assert s.follower.apply([(1, "token", token_hash("tok7"))]) == 1
    assert len(looked) == 1
    assert s.follower.apply([(2, "instance", "i-3")]) == 100
    assert s.follower.apply([(3, "session", "s4999"), (4, "token", "nothing")]) == 1
    assert len(looked) == 1 + 100 + 1
