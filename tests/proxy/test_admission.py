"""
Admission on its own: a request in, a verdict out, against the real token
API in memory (StubTreq) on a Clock; the two paths' own log lines; and the
small pure pieces around it (the seat, how a console ended).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock

from txvnc.client import ConsoleAuthClient
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.core.targets import TargetPolicy
from txvnc.proxy import closecodes
from txvnc.proxy.admission import (
    INVALID_TOKEN,
    Admission,
    ConsoleRequest,
    Verdict,
)
from txvnc.proxy.events import ConsoleEvents
from txvnc.proxy.guard import AuthFailureGuard
from txvnc.proxy.limits import ConnectionCounter, Seat

from .harness import LogCapture
from .memory import RecordingAudit

KEY = "admission-key"


class Setup:
    def __init__(self, counter: ConnectionCounter | None = None) -> None:
        self.clock = Clock()
        self.api = ConsoleAuthResource(
            MemoryTokenStore(), KEY, self.clock, "http://p", policy=TargetPolicy.allow_all()
        )
        self.audit = RecordingAudit(self.clock)
        self.admission = Admission(
            ConsoleAuthClient(StubTreq(self.api), "http://api", KEY, self.clock),
            AuthFailureGuard(self.clock),
            self.audit,
            ConsoleEvents(),
            target_policy=TargetPolicy.allow_all(),
        )
        self.counter = counter or ConnectionCounter()

    async def mint(self, **body) -> str:
        response = await StubTreq(self.api).post(
            "http://api/v1/tokens",
            json={"host": "10.0.0.5", "port": 5900, **body},
            headers={"Authorization": "Bearer " + KEY},
        )
        return str((await response.json())["token"])

    def handshake(self, token: str | None) -> ConsoleRequest:
        return ConsoleRequest.handshake(
            "req-1", "192.0.2.1:5000", None, "p", token, Seat(self.counter)
        )

    def check(self, token: str | None) -> ConsoleRequest:
        return ConsoleRequest.token_check("192.0.2.1:5000", None, "p", token)


@pytest_twisted.ensureDeferred
async def test_a_good_token_is_admitted_on_both_paths_and_only_the_handshake_spends_it():
    """The check looks at a single-use token without spending it; the handshake spends it, so a second handshake is refused."""
    setup = Setup()
    token = await setup.mint(single_use=True)
    for _ in range(2):
        verdict = await setup.admission.decide(setup.check(token))
        assert (verdict.status, verdict.body()) == (200, {"status": "valid"})
    verdict = await setup.admission.decide(setup.handshake(token))
    assert verdict.status == 200 and verdict.info is not None
    assert verdict.info.target == "10.0.0.5:5900"
    again = await setup.admission.decide(setup.handshake(token))
    assert (again.status, again.reason, again.outcome) == (403, INVALID_TOKEN, "bad_token")


@pytest_twisted.ensureDeferred
async def test_each_path_keeps_its_own_log_lines_and_audit_reasons():
    """An unknown token is logged in the handshake's words (with the console id) or the check's (without), and audited with the path's reason."""
    setup = Setup()
    with LogCapture() as log:
        await setup.admission.decide(setup.handshake("guess"))
        await setup.admission.decide(setup.check("guess"))
    handshake, check = (e for e in log.events if "token_ref" in e)
    assert handshake["log_format"].startswith("[{conn_id}] {client}: handler exception:")
    assert handshake["conn_id"] == "req-1"
    assert check["log_format"].startswith("{client}: token check: the token")
    assert "conn_id" not in check
    assert [f["reason"] for _, f in setup.audit.events] == [
        "invalid token",
        "invalid token (token check)",
    ]


@pytest_twisted.ensureDeferred
async def test_a_full_proxy_answers_with_a_close_code_before_asking_the_api():
    """Over --max-connections the handshake's verdict is to open and close with 1013; the token is not looked at."""
    setup = Setup(ConnectionCounter(max_total=1))
    setup.counter.enter()
    verdict = await setup.admission.decide(setup.handshake("whatever"))
    assert verdict.status == 200 and verdict.close is not None
    assert (verdict.close.code, verdict.outcome) == (
        closecodes.TRY_AGAIN_LATER,
        "too_many_connections",
    )
    assert setup.audit.events == []


@pytest_twisted.ensureDeferred
async def test_an_unreadable_check_is_answered_after_the_origin():
    """A check whose body could not be read gets its own answer, but a foreign origin is refused first."""
    setup = Setup()
    bad = Verdict(400, "Bad request: the body is not JSON")
    unreadable = ConsoleRequest.token_check("192.0.2.1:1", None, "p", None, bad)
    assert await setup.admission.decide(unreadable) is bad
    foreign = ConsoleRequest.token_check("192.0.2.1:1", "https://evil.example", "p", None, bad)
    assert (await setup.admission.decide(foreign)).status == 403


def test_a_seat_is_given_back_once_and_not_taken_after():
    """A seat gives back both places on release, once; a token place asked for after the release (the browser left mid-check) is not taken."""
    counter = ConnectionCounter(max_total=2, max_per_token=1)
    seat = Seat(counter)
    assert seat.take() is None and seat.take_token("t") is None
    assert (counter.total, counter.for_token("t")) == (1, 1)
    seat.release()
    seat.release()
    assert (counter.total, counter.for_token("t")) == (0, 0)

    late = Seat(counter)
    assert late.take() is None
    late.release()
    assert late.take_token("t") is None
    assert (counter.total, counter.for_token("t")) == (0, 0)


def test_a_draining_counter_refuses_with_1001():
    """While draining, no slot is given: new consoles are told the service is going away."""
    counter = ConnectionCounter()
    counter.draining = True
    refusal = counter.enter()
    assert refusal is not None
    assert (refusal.code, refusal.outcome) == (closecodes.GOING_AWAY, "shutdown")
    assert counter.total == 0


@pytest.mark.parametrize(
    "given, expected",
    [
        # Known outcome and reason stay.
        (("revoked", "token revoked", 4001, b"x", None, True, 4001), ("revoked", "token revoked")),
        # The browser closed.
        ((None, None, None, None, None, True, 1000), ("ok", "browser closed (1000)")),
        ((None, None, None, None, None, False, 1006), ("ok", "browser connection lost")),
        # Autobahn failed the connection with a code of ours.
        (
            (None, None, 1009, b"frame too big", None, False, None),
            ("message_too_big", "closed by the proxy (1009: frame too big)"),
        ),
        # A timer of the WebSocket library.
        (
            (None, None, None, None, "keepalive_timeout", False, None),
            ("keepalive_timeout", "no answer to a keepalive ping"),
        ),
    ],
)
def test_how_a_console_ended(given, expected):
    """The outcome and the closing reason come from what is known first, then this side's close frame, a library timeout, or the browser's close."""
    assert closecodes.ending(*given) == expected
