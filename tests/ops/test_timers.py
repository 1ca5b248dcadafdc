"""
Repeating steps survive their own failures (txvnc.ops.timers).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from txvnc.ops.timers import guarded, looping, timer_service


def flaky(calls: list[float], clock: Clock, how: str):
    """A step that fails on its first call (raising or with a failed Deferred)."""

    def step() -> Deferred[int] | int:
        calls.append(clock.seconds())
        if len(calls) == 1:
            if how == "raise":
                raise RuntimeError("blip")
            return fail(RuntimeError("blip"))
        return succeed(1) if how == "deferred" else 1

    return step


def failures(events: list[dict]) -> list[dict]:
    return [e for e in events if "log_failure" in e]


def test_a_step_that_raises_is_logged_and_the_loop_goes_on():
    """A LoopingCall whose step raises once logs it and calls the step again next interval."""
    clock, calls = Clock(), []
    loop = looping(clock, flaky(calls, clock, "raise"), "the step failed")
    with capturedLogs() as events:
        done = loop.start(10, now=True)
        clock.advance(10)
        clock.advance(10)
    assert calls == [0, 10, 20]
    (failed,) = failures(events)
    assert failed["log_format"] == "the step failed"
    assert failed["log_failure"].check(RuntimeError)
    loop.stop()
    assert done.called


def test_a_failed_deferred_is_logged_and_the_timer_service_goes_on():
    """A TimerService whose step's Deferred fails once logs it and keeps its schedule."""
    clock, calls = Clock(), []
    service = timer_service(clock, 5, flaky(calls, clock, "deferred"), "purge failed")
    with capturedLogs() as events:
        service.startService()
        clock.advance(5)
        clock.advance(5)
    assert calls == [0, 5, 10]
    assert [e["log_format"] for e in failures(events)] == ["purge failed"]
    service.stopService()
    assert not clock.getDelayedCalls()


def test_the_loop_waits_for_a_slow_step():
    """A step's pending Deferred holds the next call back, so steps never overlap."""
    clock, calls, pending = Clock(), [], Deferred()
    loop = looping(clock, lambda: calls.append(clock.seconds()) or pending, "x")
    loop.start(1, now=True)
    clock.advance(1)
    clock.advance(1)
    assert calls == [0]
    pending.errback(RuntimeError("late failure"))
    clock.advance(1)
    assert calls == [0, 3]
    loop.stop()


def test_guarded_answers_none():
    """The guarded step's Deferred fires with None whatever the step returned."""
    results = []
    guarded(lambda: 42, "x")().addCallback(results.append)
    guarded(lambda: 1 / 0, "x")().addCallback(results.append)
    assert results == [None, None]
