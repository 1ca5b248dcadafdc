"""
Who the client is behind a load balancer.

With C{--trusted-proxy CIDR}, a connection from a trusted address may name
the real client in C{X-Forwarded-For}; the header is read from the right
(the hop nearest to us) past every trusted address, so a client cannot
forge its address by sending its own header through the balancer. A
connection from anywhere else is named by its own address whatever it
sends. (The PROXY protocol, v1 and v2, is Twisted's C{haproxy:} endpoint
prefix: the transport's peer is then already the real client.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """
    @raise ValueError: for a value that is not an address or CIDR network.
    """
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


def in_networks(host: str, networks: Sequence[Network]) -> bool:
    """
    Whether C{host} (an address, bracketed or not; an IPv4-mapped IPv6
    address counts as its IPv4 one) is in one of C{networks}; a name is in
    none.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def split_peer(peer: str) -> tuple[str, str]:
    """
    (host, port) of an address as C{host:port} or C{[v6]:port}.
    """
    host, _, port = peer.rpartition(":")
    if not host:
        return peer, ""
    return host.strip("[]"), port


def client_address(
    peer: str, forwarded_for: str | None, networks: Sequence[Network]
) -> str:
    """
    The client's address: C{peer} (C{host:port}), or the first untrusted
    hop of C{forwarded_for} when C{peer} is a trusted proxy.
    """
    host, _ = split_peer(peer)
    if not networks or not forwarded_for or not in_networks(host, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, networks):
            return _valid(hop) or peer
    return _valid(hops[0]) or peer if hops else peer


def _valid(hop: str) -> str | None:
    # Only an address: anything else in the header is noise, not a name.
    try:
        return str(ipaddress.ip_address(hop.strip("[]")))
    except ValueError:
        return None


def request_client(request: Any, networks: Sequence[Network]) -> str:
    """
    The client of a twisted.web request as C{host:port}, or the address a
    trusted proxy forwarded for (L{client_address}); C{-} when the request
    did not come over IP.
    """
    address = request.getClientAddress()
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None:
        return "-"
    forwarded = request.getHeader(b"x-forwarded-for")
    if isinstance(forwarded, bytes):
        forwarded = forwarded.decode("latin-1")
    return client_address(f"{host}:{port}", forwarded, networks)
