"""
The reactor's loop, without Twisted's timed-call bookkeeping on the turns
where there is none to do.

Each turn of Twisted's C{mainLoop} calls C{runUntilCurrent} and then
C{timeout} before it polls: two method calls, two more of
C{_insertNewDelayedCalls}, two clock reads, a C{min} and a C{max}, about
0.6 us a turn. A console's 64-byte round trip is two turns (one event from
each side), so that is over a tenth of the proxy's own work per round trip
(docs/performance.md, "Round trip"), and on nearly every such turn the
bookkeeping finds nothing: no call from another thread (or a signal), no
new timed call, the earliest timed call not due, the reactor not stopping.

So L{lean_main_loop}'s turn checks exactly the conditions under which
C{runUntilCurrent} would do anything, and while none holds it computes the
poll's timeout from the earliest timed call with one clock read, as
C{timeout} would; as soon as one holds it calls the reactor's own
C{runUntilCurrent} and C{timeout}, so timed calls, calls from threads,
signals (which arrive as calls from a thread), the compaction of cancelled
calls and the shutdown event are all Twisted's. What escapes a turn is
logged and the loop goes on, as in Twisted.

Twisted has no public hook for this; like L{txvnc.ops.dispatch}, this
replaces one method of the reactor instance (C{mainLoop}), from the
service's start. C{run} calls C{mainLoop} once, after the startup event
that starts the services, so it takes effect from the first turn;
L{uninstall} gives Twisted's back for a later C{run}, but a loop already
running goes on with this one until the reactor stops. It reads the
reactor's C{threadCallQueue}, C{_newTimedCalls}, C{_pendingTimedCalls},
C{_cancellations} and C{_justStopped} (Twisted 26.10),
tests/proxy/test_upstream_internals.py checks them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.base import ReactorBase
from twisted.logger import Logger

from txvnc.ops.reactorchange import ReactorChange

# Twisted's namespace: its loop's two events read the same in the log (and
# in any filter an operator set on them) with this loop.
_log = Logger(namespace="twisted.internet.base")
_top = _log.failureHandler("Unexpected error in main loop")

#: Twisted's longest poll timeout (what epoll's C int of milliseconds holds).
LONGEST = 2147483

#: Twisted compacts the heap of timed calls after more than this many
#: cancellations (and more than half of it cancelled).
COMPACT_AFTER = 50


def lean_turn(reactor: Any) -> Callable[[], None]:
    """
    One turn of C{reactor}'s loop: Twisted's C{runUntilCurrent} and
    C{timeout} only when there is something for them to do, then
    C{doIteration}.
    """
    run_until_current = reactor.runUntilCurrent
    timeout = reactor.timeout
    seconds = reactor.seconds

    def turn() -> None:
        # Lists Twisted rebinds: read them from the reactor every turn.
        pending = reactor._pendingTimedCalls
        cancelled = reactor._cancellations
        if (
            reactor.threadCallQueue
            or reactor._newTimedCalls
            or reactor._justStopped
            or (cancelled > COMPACT_AFTER and cancelled > len(pending) >> 1)
        ):
            run_until_current()
            t = timeout()
        elif pending:
            t = pending[0].time - seconds()
            if t <= 0:
                run_until_current()
                t = timeout()
            elif t > LONGEST:
                t = LONGEST
        else:
            t = None
        reactor.doIteration(reactor.running and t)

    return turn


def lean_main_loop(reactor: Any) -> Callable[[], None]:
    """C{reactor}'s C{mainLoop}, as Twisted 26.10 writes it, turning L{lean_turn}."""
    turn = lean_turn(reactor)

    def mainLoop() -> None:
        while reactor._started:
            with _top:
                while reactor._started:
                    turn()
        _log.info("Main loop terminated.")

    mainLoop.lean = True  # type: ignore[attr-defined]
    mainLoop.turn = turn  # type: ignore[attr-defined]
    return mainLoop


def install(reactor: Any) -> bool:
    """
    Run C{reactor}'s next C{run} with the lean loop, when it is a Twisted
    reactor with Twisted's own C{mainLoop}; returns whether it will.
    """
    if not isinstance(reactor, ReactorBase) or "mainLoop" in vars(reactor):
        return False
    if type(reactor).mainLoop is not ReactorBase.mainLoop:
        return False
    setattr(reactor, "mainLoop", lean_main_loop(reactor))  # noqa: B010
    return True


def uninstall(reactor: Any) -> None:
    """Give C{reactor} back Twisted's C{mainLoop} (for its next C{run})."""
    if getattr(vars(reactor).get("mainLoop"), "lean", False):
        del reactor.mainLoop


class LoopService(ReactorChange):
    """L{install} when the service starts."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(partial(install, reactor), partial(uninstall, reactor))
