"""
Repeating steps that survive their own failures.

Twisted's L{LoopingCall}, and L{TimerService} built on it, stop for good
when their function raises or returns a Deferred that fails: one store blip
would end the purge of expired tokens until the next restart, one bad read
the workers' metrics. Every repeating step in txvnc goes through
L{guarded}, which logs the failure and answers success, so the loop carries
on at its next interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()


def guarded(
    step: Callable[[], object], failed: str, log: Logger = _log
) -> Callable[[], Deferred[None]]:
    """
    C{step} as a loop's function that never fails: an exception it raises,
    or a failure of the Deferred it returns, is logged on C{log} with the
    message C{failed} and the loop's next call still comes. The loop still
    waits for a Deferred C{step} returns, so steps never overlap.
    """

    def run() -> Deferred[None]:
        d: Deferred[Any] = maybeDeferred(step)
        d.addCallbacks(_nothing, _logged, errbackArgs=(failed, log))
        return d

    return run


def _nothing(result: object) -> None:
    return None


def _logged(failure: Failure, failed: str, log: Logger) -> None:
    log.failure(failed, failure)


def looping(
    clock: IReactorTime, step: Callable[[], object], failed: str, log: Logger = _log
) -> LoopingCall:
    """
    A L{LoopingCall} of the L{guarded} C{step} on C{clock}, for the caller to
    start.
    """
    loop = LoopingCall(guarded(step, failed, log))
    loop.clock = clock
    return loop


def timer_service(
    clock: IReactorTime,
    interval: float,
    step: Callable[[], object],
    failed: str,
    log: Logger = _log,
) -> TimerService:
    """
    A L{TimerService} calling the L{guarded} C{step} every C{interval}
    seconds on C{clock}, first when it starts.
    """
    service = TimerService(interval, guarded(step, failed, log))
    service.clock = clock
    return service
