"""
Hand a relay socket's events to it without Twisted's legacy log context.

For every event, Twisted's epoll reactor calls
C{twisted.python.log.callWithLogger}: it asks the selectable for its
C{logPrefix}, copies the legacy logging context into a new dict, pushes
it, calls the handler and pops it again, so that a C{twisted.python.log.msg}
made inside the handler is tagged with that prefix. On a console's round
trip (two events, one per side) that was about 4 of the 14 us the proxy
process spends when nothing has to wake it (docs/performance.md,
"Round trip"). txvnc's relay logs nothing per read, and its log lines are
L{twisted.logger} events, which do not read that context.

So, for the selectables L{txvnc.proxy.fastpath.tune} marked as relay
transports (and only those), the reactor skips that context: a plain
read event goes straight to C{doRead} (what Twisted's C{_doReadOrWrite}
does for it, less a C{fileno} check for closed descriptors that a
connected relay transport never has: about 1 us more a round trip), with
what it raises logged and the connection closed as Twisted does; any
other event (writable, hung up, error) goes to the reactor's own
C{_doReadOrWrite}. What closing a relay connection raises is logged and
the poll's other events are handled, as C{callWithLogger} does. Every
other selectable (listening ports, the WebSocket handshake, the token
API's connections) goes through C{callWithLogger} as in Twisted.

Twisted has no public hook for this; like L{txvnc.ops.spin}, this replaces
one method of the epoll reactor instance (C{doIteration}, Twisted's
C{doPoll}) from the moment the service starts until it stops, keeping the
reactor's poller (and a spinner wrapped around it), its selectables and its
C{_doReadOrWrite}. tests/proxy/test_upstream_internals.py checks the parts
used.
"""

from __future__ import annotations

import errno
import select
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log

from txvnc.ops.reactorchange import ReactorChange
from txvnc.proxy.fastpath import RELAY_MARK

_READABLE = select.EPOLLIN


def lean_do_poll(reactor: Any) -> Callable[[float | None], None]:
    """
    C{reactor}'s C{doPoll}, as Twisted 26.10 writes it, except that marked
    relay transports get their events without C{callWithLogger}, and a
    plain read event straight from C{doRead}.
    """
    call_with_logger = log.callWithLogger
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite
    disconnect = reactor._disconnectSelectable

    def doPoll(timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = reactor._poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            try:
                selectable = selectables[fd]
            except KeyError:
                continue
            if not getattr(selectable, RELAY_MARK, False):
                call_with_logger(selectable, handle, selectable, fd, event)
            elif event == _READABLE:
                try:
                    why = selectable.doRead()
                    read = True
                except BaseException:
                    # As Twisted: logged, and the connection closed as not
                    # having read (isRead false).
                    why = sys.exc_info()[1]
                    read = False
                    log.err()
                if why:
                    _guarded(disconnect, selectable, why, read)
            else:
                _guarded(handle, selectable, fd, event)

    doPoll.lean = True  # type: ignore[attr-defined]
    return doPoll


def _guarded(f: Callable[..., object], *args: Any) -> None:
    """
    C{f(*args)}, what it raises logged, as C{callWithLogger} does: an
    error in closing one connection (its protocol's C{connectionLost})
    must not leave C{doPoll} and drop the rest of the poll's events.
    """
    try:
        f(*args)
    except KeyboardInterrupt:
        raise
    except BaseException:
        log.err()


def install(reactor: Any) -> bool:
    """
    Dispatch relay events without the log context on C{reactor}, when it is
    Twisted's epoll reactor with its own C{doPoll}; returns whether it does.
    """
    if not isinstance(reactor, EPollReactor) or "doIteration" in vars(reactor):
        return False
    if type(reactor).doIteration is not EPollReactor.doPoll:
        return False
    setattr(reactor, "doIteration", lean_do_poll(reactor))  # noqa: B010
    return True


def uninstall(reactor: Any) -> None:
    """Give C{reactor} back Twisted's C{doPoll}."""
    if getattr(vars(reactor).get("doIteration"), "lean", False):
        del reactor.doIteration


class DispatchService(ReactorChange):
    """L{install} while the service runs."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(partial(install, reactor), partial(uninstall, reactor))
