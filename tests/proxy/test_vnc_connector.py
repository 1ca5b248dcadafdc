"""
How the connector reaches a TCP target: an IP address directly, a host name
through resolution.
"""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock

from txvnc.client import ConnectInfo
from txvnc.proxy.vnc import VNCClientProtocol, VNCConnector, tcp_endpoint


class Peer:
    def vnc_data(self, data):
        pass

    def vnc_lost(self, reason):
        pass


def test_an_ip_address_is_connected_to_at_once_without_resolving():
    """IPv4 and IPv6 targets go straight to connectTCP, no resolver and no thread."""
    reactor = MemoryReactorClock()
    connector = VNCConnector(reactor, timeout=3)
    for host in ("10.0.0.6", "::1"):
        connector.connect(ConnectInfo(host, 5900, "i", "novnc", ""), VNCClientProtocol(Peer()))
    assert [(c[0], c[1], c[3]) for c in reactor.tcpClients] == [
        ("10.0.0.6", 5900, 3),
        ("::1", 5900, 3),
    ]


def test_a_host_name_is_resolved_first():
    """A name still goes through HostnameEndpoint (resolution, several addresses)."""
    assert isinstance(tcp_endpoint(MemoryReactorClock(), "vnc.example", 5900, 3), HostnameEndpoint)
    assert not isinstance(tcp_endpoint(MemoryReactorClock(), "192.0.2.1", 5900, 3), HostnameEndpoint)
