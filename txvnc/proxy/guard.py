"""
The brute-force guard: a client that fails too many token checks in a
minute is slowed down, without locking out its neighbours.

Behind NAT, or a load balancer without C{--trusted-proxy}, one address is a
whole office: refusing everything from it for a minute (as this guard once
did) let one guesser lock out every colleague holding a valid link. So a
blocked address still has its tokens checked, but I{paced}: one check per
C{window / max_failures} seconds (3 s by default), the guard's own rate; a
request waits for its turn (L{AuthFailureGuard.next_check}) up to
C{max_wait} seconds, and only one that would wait longer is refused at once
(HTTP 429) without asking the token API. A valid token opens; a failed one
is answered 429 and keeps the address blocked for another C{cooldown}. A
guesser thus gets about C{max_failures} guesses a minute however fast it
asks, and pays for each extra one with a connection held open while it
waits; a neighbour waits a few seconds behind it, and is only refused while
the guesser keeps more than C{max_wait} seconds of checks queued.

IPv6 clients are counted per /64: one subscriber usually holds a whole /64
and can pick any address in it. Pure bookkeeping on a clock passed in.
"""

from __future__ import annotations

import ipaddress
from collections import deque

from twisted.internet.interfaces import IReactorTime

DEFAULT_MAX_FAILURES = 20
WINDOW = 60.0
COOLDOWN = 60.0
#: The longest a blocked address's request waits for its paced check.
MAX_WAIT = 10.0
#: Beyond this many tracked addresses the quiet ones are forgotten, so a
#: flood from many addresses costs bounded memory.
MAX_TRACKED = 100_000


def address_of(client: str) -> str:
    """
    The address part of C{host:port} (IPv4 or IPv6, as the relay writes it).
    """
    host, sep, port = client.rpartition(":")
    return host if sep and port.isdigit() else client


def client_key(address: str) -> str:
    """
    What the guard counts C{address} as: an IPv4 address itself (also when
    written IPv4-mapped), an IPv6 address as its /64, anything else (a unix
    peer) as written.
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthFailureGuard:
    """
    Counts failed token checks per client (L{client_key}) over a sliding
    minute, and paces the checks of a client over its budget.

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
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self.cooldown = cooldown
        self.max_tracked = max_tracked
        self.max_wait = max_wait
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self._next_check: dict[str, float] = {}

    @property
    def pace(self) -> float:
        """Seconds between two checks of a blocked client."""
        return self.window / self.max_failures if self.max_failures > 0 else 0.0

    def blocked(self, address: str) -> bool:
        """
        Whether C{address} is cooling down now.
        """
        key = client_key(address)
        until = self._blocked_until.get(key)
        if until is None:
            return False
        if self.clock.seconds() < until:
            return True
        del self._blocked_until[key]
        self._next_check.pop(key, None)
        return False

    def next_check(self, address: str) -> float | None:
        """
        For a blocked C{address}: how many seconds its request waits before
        its token is checked (its turn is taken now), or L{None} when its
        turn would come after C{max_wait}: refuse it unchecked.
        """
        key = client_key(address)
        now = self.clock.seconds()
        turn = max(self._next_check.get(key, now), now)
        wait = turn - now
        if wait > self.max_wait:
            return None
        self._next_check[key] = turn + self.pace
        return wait

    def failed(self, address: str) -> bool:
        """
        Count one failure; L{True} when it is the one that starts a
        cool-down (the caller logs that, once). A failure while blocked
        extends the cool-down instead.
        """
        if self.max_failures <= 0:
            return False
        key = client_key(address)
        now = self.clock.seconds()
        until = self._blocked_until.get(key)
        if until is not None and now < until:
            self._blocked_until[key] = now + self.cooldown
            return False
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self.max_tracked:
                self._forget_quiet(now)
            times = self._failures[key] = deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) > self.max_failures:
            self._blocked_until[key] = now + self.cooldown
            del self._failures[key]
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
            self._next_check.pop(address, None)
