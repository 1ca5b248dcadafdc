"""
The brute-force guard: a client address that fails too many token checks in
a minute is refused (HTTP 429) for a cool-down, without asking the token API.

Pure bookkeeping on a clock that is passed in; the protocol asks
L{AuthFailureGuard.blocked} before a check and reports each failure.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IReactorTime

DEFAULT_MAX_FAILURES = 20
WINDOW = 60.0
COOLDOWN = 60.0
#: Beyond this many tracked addresses the quiet ones are forgotten, so a
#: flood from many addresses costs bounded memory.
MAX_TRACKED = 100_000


def address_of(client: str) -> str:
    """
    The address part of C{host:port} (IPv4 or IPv6, as the relay writes it).
    """
    host, sep, port = client.rpartition(":")
    return host if sep and port.isdigit() else client


class AuthFailureGuard:
    """
    Counts failed token checks per client address over a sliding minute.

    @param max_failures: failures allowed per minute; the next one starts a
        cool-down. 0 turns the guard off.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window: float = WINDOW,
        cooldown: float = COOLDOWN,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self.cooldown = cooldown
        self.max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def blocked(self, address: str) -> bool:
        """
        Whether C{address} is cooling down now.
        """
        until = self._blocked_until.get(address)
        if until is None:
            return False
        if self.clock.seconds() < until:
            return True
        del self._blocked_until[address]
        return False

    def failed(self, address: str) -> bool:
        """
        Count one failure; L{True} when it is the one that starts a
        cool-down (the caller logs that, once).
        """
        if self.max_failures <= 0:
            return False
        now = self.clock.seconds()
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= self.max_tracked:
                self._forget_quiet(now)
            times = self._failures[address] = deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) > self.max_failures:
            self._blocked_until[address] = now + self.cooldown
            del self._failures[address]
            return True
        return False

    def _forget_quiet(self, now: float) -> None:
        quiet = [
            a for a, t in self._failures.items() if not t or t[-1] <= now - self.window
        ]
        for address in quiet:
            del self._failures[address]
        if len(self._failures) >= self.max_tracked:
            # Still full of busy addresses: drop the oldest half.
            for address in list(self._failures)[: self.max_tracked // 2]:
                del self._failures[address]
        for address in [a for a, u in self._blocked_until.items() if u <= now]:
            del self._blocked_until[address]
