"""
Poll a little before sleeping, so a console's next message is not held up
by the wake-up of a sleeping process.

Every hop of a console is one process waking another: the browser wakes the
proxy, the proxy wakes the VNC server, and back. Measured on the benchmark
machine (a 2-vCPU virtual machine, docs/performance.md), a round trip
through the proxy took about 110 us while the proxy's own work in it was
under 50 us: most of the rest was the time between a byte arriving and the
sleeping proxy running again (an idle vCPU has to be woken by its
hypervisor). A reactor that keeps polling for a few tens of microseconds
after a short wait is still running when the answer comes, and the round
trip halves.

Spinning costs CPU, so it is adaptive and bounded:

 - it starts only after a wait that ended with events within the window
   (traffic is flowing); a spin that times out stops it until the next
   short wait, so an idle console or a typing user costs one window at
   most per burst;
 - time lost to spins that time out is taken from a budget that refills
   at L{BUDGET_SHARE} of the wall clock, so whatever the traffic, spinning
   never wastes more than that share of a core (a spin that finds an event
   replaces a sleep and a wake-up, which cost CPU too);
 - between polls it yields the CPU (C{sched_yield}), so a process waiting
   for this CPU (the VNC server, the browser) runs first;
 - it is off where the process may use only one CPU.

Twisted has no public hook for how the reactor waits, so this wraps the
epoll reactor's poller object (C{EPollReactor._poller}) and leaves the
reactor's own loop and dispatch untouched.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.logger import Logger

from txvnc.ops.reactorchange import ReactorChange

_log = Logger()

#: Default window, in microseconds (C{--poll-spin}): off. With the browser
#: a millisecond or more away (any real console) a spin catches nothing
#: the browser sends and round trips were the same with and without, while
#: the proxy's CPU per round trip rose by about 60 us (docs/performance.md,
#: "Spinning before sleeping"). It pays only where everything is a few
#: microseconds apart: loopback benchmarks, a proxy beside its browsers.
DEFAULT_SPIN_US = 0.0

#: Longest window an operator may ask for: past this a sleep is cheaper.
MAX_SPIN_US = 1000.0

#: Share of wall-clock time that spins which time out may use.
BUDGET_SHARE = 0.02

#: Most budget saved up, in seconds: a quiet minute does not buy a long
#: stretch of wasted spinning afterwards.
BUDGET_CAP = 0.005


class SpinningPoller:
    """
    An epoll object that, when asked to block, first polls without blocking
    for up to C{window} seconds if traffic is flowing.

    @ivar wasted: seconds spent in spins that found nothing (for tests and
        the curious).
    """

    def __init__(
        self,
        poller: Any,
        window: float,
        clock: Callable[[], float] = time.perf_counter,
        yield_cpu: Callable[[], None] = os.sched_yield,
    ) -> None:
        self._poller = poller
        self._window = window
        self._clock = clock
        self._yield = yield_cpu
        self._flowing = False
        self._budget = BUDGET_CAP
        self._refilled = clock()
        self.wasted = 0.0

    # The reactor registers and unregisters its descriptors as before.
    def register(self, fd: int, eventmask: int) -> None:
        self._poller.register(fd, eventmask)

    def modify(self, fd: int, eventmask: int) -> None:
        self._poller.modify(fd, eventmask)

    def unregister(self, fd: int) -> None:
        self._poller.unregister(fd)

    def fileno(self) -> int:
        return int(self._poller.fileno())

    def close(self) -> None:
        self._poller.close()

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        poll = self._poller.poll
        if timeout == 0:
            return poll(0, maxevents)
        clock = self._clock
        start = clock()
        spin = self._spin_allowed(start, timeout)
        if spin:
            deadline = start + spin
            events = poll(0, maxevents)
            while not events:
                now = clock()
                if now >= deadline:
                    # Nothing came: traffic has paused, so sleep from now
                    # on until a wait is short again.
                    self._flowing = False
                    self._budget -= now - start
                    self.wasted += now - start
                    break
                self._yield()
                events = poll(0, maxevents)
            else:
                return events
            if timeout > 0:
                timeout = max(0.0, timeout - (now - start))
        events = poll(timeout, maxevents)
        self._flowing = bool(events) and clock() - start <= self._window
        return events

    def _spin_allowed(self, now: float, timeout: float) -> float:
        """
        How long to spin before this wait's blocking poll: 0 unless traffic
        is flowing and the budget covers a whole window.
        """
        self._budget = min(
            BUDGET_CAP, self._budget + (now - self._refilled) * BUDGET_SHARE
        )
        self._refilled = now
        if not self._flowing or self._budget < self._window:
            return 0.0
        return self._window if timeout < 0 else min(self._window, timeout)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def install(reactor: Any, microseconds: float, cpus: int | None = None) -> bool:
    """
    Make C{reactor} spin for up to C{microseconds} before it sleeps, when it
    is an epoll reactor, the window is not 0 and the process may run on
    more than one CPU. Returns whether it does.
    """
    poller = getattr(reactor, "_poller", None)
    if cpus is None:
        cpus = usable_cpus()
    if (
        microseconds <= 0
        or cpus < 2
        or isinstance(poller, SpinningPoller)
        or not hasattr(select, "epoll")
        or not isinstance(poller, select.epoll)
    ):
        return False
    reactor._poller = SpinningPoller(poller, microseconds / 1e6)
    _log.info(
        "the reactor polls for up to {spin_us:g} us before it sleeps while "
        "traffic flows (--poll-spin)",
        spin_us=microseconds,
    )
    return True


def uninstall(reactor: Any) -> None:
    """Give C{reactor} back the poller L{install} wrapped."""
    poller = getattr(reactor, "_poller", None)
    if isinstance(poller, SpinningPoller):
        reactor._poller = poller._poller


class SpinService(ReactorChange):
    """
    Spinning for as long as the service runs: the reactor is left as it was
    until the service starts, and given back when it stops.
    """

    def __init__(
        self, reactor: Any, microseconds: float, cpus: int | None = None
    ) -> None:
        super().__init__(
            partial(install, reactor, microseconds, cpus), partial(uninstall, reactor)
        )
