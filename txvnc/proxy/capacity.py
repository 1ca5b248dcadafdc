"""
File descriptors: how many consoles a process can hold, and the count that
keeps the proxy from taking the last descriptor.

Under a 256 open-files limit, 300 consoles once drove the process into
C{EMFILE}: every socket, the token API's and the health checks' included,
comes out of one table, so the API and C{/healthz} stopped answering. Each
console holds two descriptors (its browser's socket and its VNC
server's); its token check rides on the proxy's pool of at most 16
connections to the token API (32 descriptors when the API runs in the same
process), which, with what the process needs for itself (listeners, logs,
the store), is kept in L{RESERVE}.

So C{--max-connections} defaults to what fits (L{default_max_connections}:
two descriptors a console, with a twentieth of the rest, and at least
L{HEADROOM} descriptors, left so that pages and 1013 refusals still find
room; 9,454 consoles under a limit of 20,000),
and L{ConnectionBudget} counts the proxy's open connections against the
descriptors there are: over it, a new connection is answered 503 and
closed (L{txvnc.proxy.site}); it also caps the connections of one client
address that carry no open console yet (page loads, token checks,
handshakes in progress), so no one client takes the table with
unauthenticated connections.

If the process reaches C{EMFILE} anyway (another part of it), Twisted's
TCP listener falls back on a descriptor it keeps in reserve: it releases
it, accepts and closes the waiting connections, and takes it again;
without that reserve it logs "Could not accept new connection (EMFILE)"
and retries on the next reactor turn, without ever closing the listener.
"""

from __future__ import annotations

import ipaddress
import resource
from collections.abc import Sequence

from txvnc.core.forwarded import Network, in_networks
from txvnc.proxy.guard import client_key
from txvnc.proxy.limits import ConnectionCounter

#: Descriptors kept for everything but the proxy's own connections.
RESERVE = 96
#: Connections of one client address with no open console, by default.
DEFAULT_PENDING_PER_ADDRESS = 64
#: Peers never capped per address: a reverse proxy on the same host brings
#: every client from loopback (as a load balancer named by --trusted-proxy
#: brings them from its own address).
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
#: Descriptors a console takes: its browser's socket and its VNC server's.
PER_CONSOLE = 2
#: Descriptors the default --max-connections leaves, at least, for
#: connections that are not consoles (pages, checks, refusals answered).
HEADROOM = 64


def open_files_limit() -> int | None:
    """The soft C{RLIMIT_NOFILE} of this process; L{None} when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def descriptor_capacity(limit: int | None) -> int:
    """Descriptors the proxy's connections may take; 0: no cap."""
    if limit is None:
        return 0
    return max(limit - RESERVE, PER_CONSOLE)


def default_max_connections(limit: int | None) -> int:
    """
    The C{--max-connections} that fits in C{limit} open files (0, no
    limit, when the process has none): L{PER_CONSOLE} descriptors a
    console, once a twentieth of the capacity (at least L{HEADROOM}) is
    left for connections that are not consoles (pages, checks, refusals
    that must still be answered).
    """
    capacity = descriptor_capacity(limit)
    if not capacity:
        return 0
    headroom = max(capacity // 20, HEADROOM)
    return max((capacity - headroom) // PER_CONSOLE, 1)


class Slot:
    """
    One open connection's place in a L{ConnectionBudget}: pending (counted
    against its address) until L{admitted}, given back by L{release}.
    """

    def __init__(self, budget: ConnectionBudget, key: str | None) -> None:
        self._budget = budget
        self._key = key
        self._released = False

    def admitted(self) -> None:
        """Its console opened: it no longer counts against its address."""
        key, self._key = self._key, None
        if key is not None:
            self._budget._leave_pending(key)

    def release(self) -> None:
        """The connection is closed (called once; again does nothing)."""
        if self._released:
            return
        self._released = True
        self.admitted()
        self._budget.open -= 1


class ConnectionBudget:
    """
    The proxy's open connections against the descriptors it may use.

    @param capacity: descriptors the proxy may take
        (L{descriptor_capacity}); 0: no cap.
    @param per_address: connections with no open console per client
        address (an IPv6 /64); 0: no cap. Loopback peers and those in
        C{exempt} (load balancers named by C{--trusted-proxy}) are not
        capped: every client behind them shares their address.
    @param counter: the consoles open or opening, each holding up to two
        descriptors beside its browser's.
    """

    def __init__(
        self,
        capacity: int,
        per_address: int,
        counter: ConnectionCounter,
        exempt: Sequence[Network] = (),
    ) -> None:
        self.capacity = capacity
        self.per_address = per_address
        self.counter = counter
        self.exempt = (*LOOPBACK, *exempt)
        self.open = 0
        self._pending: dict[str, int] = {}

    @property
    def in_use(self) -> int:
        """Descriptors the proxy's connections hold, as counted."""
        return self.open + (PER_CONSOLE - 1) * self.counter.total

    def take(self, host: str | None) -> Slot | str:
        """
        A slot for a new connection from C{host}, or why there is none.
        """
        if self.capacity and self.in_use + 1 > self.capacity:
            return "no file descriptors to spare"
        key = None
        if host is not None and not in_networks(host, self.exempt):
            key = client_key(host)
            if self.per_address and self._pending.get(key, 0) >= self.per_address:
                return f"over {self.per_address} connections without a console"
            self._pending[key] = self._pending.get(key, 0) + 1
        self.open += 1
        return Slot(self, key)

    def pending(self, host: str) -> int:
        """Connections from C{host} with no open console."""
        return self._pending.get(client_key(host), 0)

    def _leave_pending(self, key: str) -> None:
        count = self._pending.get(key, 0) - 1
        if count > 0:
            self._pending[key] = count
        else:
            self._pending.pop(key, None)
