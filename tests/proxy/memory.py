"""
The proxy in memory, without a socket: the real token API behind treq's
StubTreq, the proxy's real site, and browsers and VNC servers joined to it
with L{twisted.test.iosim}, all on one L{Clock}.
"""

from __future__ import annotations

import base64
import itertools
import os
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.web.resource import Resource

from txvnc.client import ConsoleAuthClient
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.core.audit import AuditLog
from txvnc.core.targets import TargetPolicy
from txvnc.proxy.guard import AuthFailureGuard
from txvnc.proxy.limits import Limits
from txvnc.proxy.site import console_site
from txvnc.proxy.vnc import VNCConnector
from txvnc.proxy.websocket import ConsoleProxyFactory

from .harness import Browser

KEY = "memory-key"
HOST = "proxy.test"
_ports = itertools.count(40000)


class RecordingAudit(AuditLog):
    """An audit log that keeps its events in a list."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


class MemoryVNCServer(Protocol):
    """One in-memory VNC connection: keeps what arrives."""

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class MemoryConnector(VNCConnector):
    """
    Connects each console to a new L{MemoryVNCServer} over iosim, or fails
    with C{refuse} set.
    """

    def __init__(self) -> None:
        super().__init__(reactor=None)
        self.servers: list[MemoryVNCServer] = []
        self.pumps: list[iosim.IOPump] = []
        self.refuse: Exception | None = None

    def connect(self, info: Any, protocol: Any) -> Deferred[Any]:
        if self.refuse is not None:
            d: Deferred[Any] = Deferred()
            d.errback(self.refuse)
            return d
        server = MemoryVNCServer()
        self.servers.append(server)
        vnc = IPv4Address("TCP", info.host, info.port)
        local = IPv4Address("TCP", "127.0.0.1", next(_ports))
        self.pumps.append(
            iosim.connect(
                server,
                iosim.FakeTransport(server, True, vnc, local),
                protocol,
                iosim.FakeTransport(protocol, False, local, vnc),
                greet=False,
            )
        )
        return succeed(protocol)


class RawUpgrade(Protocol):
    """A hand-written WebSocket upgrade request; keeps the answer."""

    def __init__(self, path: str, headers: dict[str, str]) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        ).encode()
        self.answer = b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.answer += data

    @property
    def status(self) -> tuple[int, str]:
        line = self.answer.split(b"\r\n", 1)[0].decode()
        _, code, phrase = line.split(" ", 2)
        return int(code), phrase


class MemoryProxy:
    """
    The proxy's site and the token API, in memory on one Clock.

    @param api: the token API the proxy asks (default: the real one that
        C{mint} uses).
    """

    def __init__(
        self,
        api: Resource | None = None,
        limits: Limits | None = None,
        max_failures: int = 20,
        **factory: Any,
    ) -> None:
        self.clock = Clock()
        self.store = MemoryTokenStore()
        self.api = ConsoleAuthResource(
            self.store, KEY, self.clock, f"http://{HOST}", policy=TargetPolicy.allow_all()
        )
        self.admin = StubTreq(self.api)
        self.auth_http = StubTreq(api if api is not None else self.api)
        self.audit = RecordingAudit(self.clock)
        self.vnc = MemoryConnector()
        factory.setdefault("target_policy", TargetPolicy.allow_all())
        self.factory = ConsoleProxyFactory(
            self.clock,
            ConsoleAuthClient(self.auth_http, "http://api.test", KEY, self.clock),
            # Autobahn's own timers run on the global reactor: no pings here.
            limits=limits or Limits(keepalive_interval=0),
            guard=AuthFailureGuard(self.clock, max_failures),
            audit=self.audit,
            connector=self.vnc,
            **factory,
        )
        self.site = console_site(self.factory)
        self.pumps: list[iosim.IOPump] = []

    async def mint(self, **body: Any) -> str:
        response = await self.admin.post(
            "http://api.test/v1/tokens",
            json={"host": "10.0.0.5", "port": 5900, "ttl": 600, **body},
            headers={"Authorization": "Bearer " + KEY},
        )
        assert response.code == 201, response.code
        return str((await response.json())["token"])

    def _connect(self, client: Protocol, peer: str = "127.0.0.1") -> iosim.IOPump:
        proxy_address = IPv4Address("TCP", "127.0.0.1", 6080)
        client_address = IPv4Address("TCP", peer, next(_ports))
        server = self.site.buildProtocol(client_address)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, proxy_address, client_address),
            client,
            iosim.FakeTransport(client, False, client_address, proxy_address),
            greet=False,
        )
        self.pumps.append(pump)
        self.flush()
        return pump

    def upgrade(self, query: str, origin: str | None = "same", **headers: str) -> tuple[int, str]:
        """The status of a WebSocket upgrade for C{query}."""
        if origin is not None:
            headers["Origin"] = f"http://{HOST}" if origin == "same" else origin
        raw = RawUpgrade(f"/websockify?{query}", headers)
        self._connect(raw)
        return raw.status

    def browser(self, query: str, origin: str | None = "same") -> Browser:
        """A WebSocket client (noVNC's stand-in) for C{query}, connected."""
        factory = WebSocketClientFactory(
            f"ws://{HOST}/websockify?{query}",
            origin=f"http://{HOST}" if origin == "same" else origin,
            protocols=["binary"],
        )
        factory.protocol = Browser
        browser = factory.buildProtocol(None)
        self._connect(browser)
        return browser

    def flush(self) -> None:
        """Move every byte there is to move, in every direction."""
        moved = True
        while moved:
            self.auth_http.flush()
            moved = False
            for pump in [*self.pumps, *self.vnc.pumps]:
                moved = pump.flush() or moved
