"""
The VNC server's side of a console: the TCP (or unix socket) client
protocol, and the connector that reaches a token's target.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure

from txvnc.client import ConnectInfo
from txvnc.core.unixpaths import still_real


class UnixPathChanged(Exception):
    """
    A unix target that was checked at admission became (or gained) a
    symbolic link before the console connected.
    """

    def __str__(self) -> str:
        return f"{self.args[0]} changed into a symbolic link after it was checked"


class VNCPeer(Protocol):
    """
    What a L{VNCClientProtocol} tells its console.
    """

    def vnc_data(self, data: bytes) -> None: ...

    def vnc_lost(self, reason: Failure) -> None: ...


class VNCClientProtocol(TwistedProtocol):
    """
    The VNC server side of one console: forwards everything to its console.
    """

    def __init__(self, console: VNCPeer) -> None:
        self._console = console

    def dataReceived(self, data: bytes) -> None:
        self._console.vnc_data(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._console.vnc_lost(reason)


class _OneConsole(Factory):
    """
    Hands out one prepared L{VNCClientProtocol}; quiet, because the console's
    own open and close lines already say everything.
    """

    noisy = False

    def __init__(self, protocol: VNCClientProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> VNCClientProtocol:
        return self._protocol


def tcp_endpoint(reactor: Any, host: str, port: int, timeout: float) -> Any:
    """
    The endpoint for a TCP target: an IP address (what a cloud's token
    names, nearly always) is connected to directly; only a host name goes
    through L{HostnameEndpoint}, which resolves it in a thread and races
    its addresses. For an address that machinery was about a tenth of the
    proxy's time while consoles opened (docs/performance.md).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if address.version == 4:
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)


class VNCConnector:
    """
    Connects consoles to their VNC servers: a TCP target through
    L{tcp_endpoint}, a unix socket through L{UNIXClientEndpoint}, each
    given up after C{timeout} seconds. Tests hand the factory another
    connector (one that never answers, or connects in memory).
    """

    def __init__(self, reactor: Any, timeout: float = 10.0) -> None:
        self._reactor = reactor
        self.timeout = timeout

    def connect(
        self, info: ConnectInfo, protocol: VNCClientProtocol
    ) -> Deferred[VNCClientProtocol]:
        """
        Connect C{protocol} to C{info}'s target; fires with C{protocol}.
        """
        endpoint: Any
        if info.unix_path is not None:
            if not still_real(info.unix_path):
                # Admission resolved the path and found it allowed; a link
                # has appeared in it since: go nowhere.
                return fail(UnixPathChanged(info.unix_path))
            endpoint = UNIXClientEndpoint(
                self._reactor, info.unix_path, timeout=self.timeout
            )
        else:
            endpoint = tcp_endpoint(self._reactor, info.host, info.port, self.timeout)
        d: Deferred[Any] = endpoint.connect(_OneConsole(protocol))
        return d

