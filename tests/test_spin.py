"""
The reactor's spin before sleeping (L{txvnc.ops.spin}): when it spins, for how
long, and that the CPU it wastes stays within its budget.
"""

from __future__ import annotations

import select
import socket

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactorClock

from txvnc.ops.spin import (
    BUDGET_CAP,
    BUDGET_SHARE,
    SpinningPoller,
    SpinService,
    install,
)

WINDOW = 100e-6
EVENT = [(7, select.EPOLLIN)]


class ScriptedPoller:
    """
    An epoll stand-in on a fake clock: each C{poll} call takes C{cost}
    seconds, and events arrive at the times in C{arrivals}.
    """

    def __init__(self, arrivals: list[float], cost: float = 2e-6) -> None:
        self.now = 0.0
        self.arrivals = sorted(arrivals)
        self.cost = cost
        self.calls: list[float] = []

    def clock(self) -> float:
        return self.now

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list:
        self.calls.append(timeout)
        self.now += self.cost
        if self.arrivals and self.arrivals[0] <= self.now:
            self.arrivals.pop(0)
            return EVENT
        if timeout == 0:
            return []
        until = self.now + timeout if timeout > 0 else float("inf")
        if self.arrivals and self.arrivals[0] <= until:
            self.now = self.arrivals.pop(0)
            return EVENT
        self.now = until
        return []


def spinning(poller: ScriptedPoller, window: float = WINDOW) -> SpinningPoller:
    yields: list[None] = []
    spinner = SpinningPoller(
        poller, window, clock=poller.clock, yield_cpu=lambda: yields.append(None)
    )
    spinner.yields = yields  # type: ignore[attr-defined]
    return spinner


def test_sleeps_while_traffic_is_not_flowing():
    """A first wait, or one after a long quiet, goes straight to sleep."""
    poller = ScriptedPoller([1.0])
    spinner = spinning(poller)
    assert spinner.poll(5) == EVENT
    assert poller.calls == [5]


def test_spins_after_a_short_wait():
    """
    After a wait that ended within the window, the next wait polls without
    blocking (yielding the CPU between polls) and never sleeps when the
    event comes inside the window.
    """
    poller = ScriptedPoller([30e-6, 90e-6])
    spinner = spinning(poller)
    assert spinner.poll(-1) == EVENT  # short: traffic flows
    calls = len(poller.calls)
    assert spinner.poll(-1) == EVENT
    spun = poller.calls[calls:]
    assert spun and all(t == 0 for t in spun)
    assert len(spinner.yields) == len(spun) - 1
    assert spinner.wasted == 0


def test_a_spin_that_times_out_sleeps_for_the_rest_of_the_timeout():
    """
    A spin that finds nothing gives up at the window, sleeps for what is
    left of the reactor's timeout (not the whole of it again), and the next
    wait sleeps at once.
    """
    poller = ScriptedPoller([30e-6, 0.5, 0.9])
    spinner = spinning(poller)
    spinner.poll(-1)
    started = poller.now
    assert spinner.poll(1.0) == EVENT
    assert poller.now == 0.5
    blocking = [t for t in poller.calls if t != 0]
    assert blocking[-1] == pytest.approx(1.0 - WINDOW, abs=5e-6)
    assert spinner.wasted == pytest.approx(WINDOW, abs=5e-6)
    assert poller.now - started > WINDOW
    calls = len(poller.calls)
    spinner.poll(1.0)
    assert poller.calls[calls:] == [1.0]


def test_zero_timeout_never_spins():
    """The reactor asking whether anything is ready gets one poll."""
    poller = ScriptedPoller([30e-6])
    spinner = spinning(poller)
    spinner.poll(-1)
    poller.calls.clear()
    assert spinner.poll(0) == []
    assert poller.calls == [0]


def test_spin_is_no_longer_than_the_timeout():
    """A timer due sooner than the window ends the spin at the timer."""
    poller = ScriptedPoller([30e-6, 1.0])
    spinner = spinning(poller)
    spinner.poll(-1)
    started = poller.now
    assert spinner.poll(20e-6) == []
    assert poller.now - started == pytest.approx(20e-6, abs=5e-6)


def test_wasted_spinning_stays_within_its_budget():
    """
    Traffic shaped to waste the most (a short wait, then a gap just longer
    than the window, over and over for a simulated second) wastes no more
    than BUDGET_SHARE of the time, plus the saved-up cap.
    """
    arrivals = []
    t = 0.0
    while t < 1.0:
        arrivals += [t + 20e-6, t + 20e-6 + WINDOW * 1.5]
        t += 20e-6 + WINDOW * 1.5 + 1e-6
    poller = ScriptedPoller(arrivals)
    spinner = spinning(poller)
    while poller.arrivals:
        spinner.poll(-1)
    assert spinner.wasted > 0
    assert spinner.wasted <= BUDGET_SHARE * poller.now + BUDGET_CAP + WINDOW


def test_real_epoll_through_the_spinner():
    """Registration and events pass through to a real epoll object."""
    epoll = select.epoll()
    spinner = SpinningPoller(epoll, WINDOW)
    a, b = socket.socketpair()
    try:
        spinner.register(a.fileno(), select.EPOLLIN)
        assert spinner.poll(0) == []
        b.send(b"x")
        assert spinner.poll(1) == [(a.fileno(), select.EPOLLIN)]
        spinner.modify(a.fileno(), select.EPOLLOUT)
        assert spinner.poll(1) == [(a.fileno(), select.EPOLLOUT)]
        spinner.unregister(a.fileno())
        assert spinner.poll(0) == []
        assert spinner.fileno() == epoll.fileno()
    finally:
        spinner.close()
        a.close()
        b.close()
    assert epoll.closed


def test_install_wraps_an_epoll_reactor_once():
    """
    An epoll reactor gets the spinner; a second install, a window of 0, a
    single CPU or another kind of reactor leave things as they are.
    """
    reactor = EPollReactor()
    try:
        assert not install(reactor, 0, cpus=2)
        assert not install(reactor, 100, cpus=1)
        assert isinstance(reactor._poller, select.epoll)
        assert install(reactor, 100, cpus=2)
        assert isinstance(reactor._poller, SpinningPoller)
        assert not install(reactor, 100, cpus=2)
        # The reactor still works through it: a reader is called.
        a, b = socket.socketpair()
        a.setblocking(False)
        seen = []

        class Reader:
            def fileno(self):
                return a.fileno()

            def doRead(self):
                seen.append(a.recv(10))

            def logPrefix(self):
                return "reader"

            def connectionLost(self, reason):
                pass

        reader = Reader()
        reactor.addReader(reader)
        b.send(b"ping")
        reactor.doIteration(1)
        reactor.removeReader(reader)
        assert seen == [b"ping"]
        a.close()
        b.close()
    finally:
        reactor._poller.close()
    assert not install(MemoryReactorClock(), 100, cpus=2)


def test_spin_service_installs_while_running():
    """
    The reactor spins only while the service runs: untouched when the
    service is made, wrapped when it starts, given back when it stops.
    """
    reactor = EPollReactor()
    epoll = reactor._poller
    try:
        service = SpinService(reactor, 100, cpus=2)
        assert reactor._poller is epoll
        service.startService()
        assert isinstance(reactor._poller, SpinningPoller)
        service.stopService()
        assert reactor._poller is epoll
    finally:
        epoll.close()
