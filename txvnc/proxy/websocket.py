"""
The browser's side: Autobahn's WebSocket server protocol, which only turns
network events into calls on one L{Console}, and the factory that holds
what every console of the proxy shares.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from txvnc.client import ConsoleAuthClient
from txvnc.core.audit import AuditLog
from txvnc.core.forwarded import Network, client_address
from txvnc.core.targets import TargetPolicy
from txvnc.proxy.admission import INTERNAL_ERROR, Admission, ConsoleRequest
from txvnc.proxy.capacity import ConnectionBudget, Slot
from txvnc.proxy.console import Console
from txvnc.proxy.events import ConsoleEvents
from txvnc.proxy.fastpath import FastWebSocketProtocol
from txvnc.proxy.guard import AuthFailureGuard
from txvnc.proxy.limits import ConnectionCounter, Limits
from txvnc.proxy.recorder import ConsoleRecorder, Recordings
from txvnc.proxy.registry import ConsoleRegistry
from txvnc.proxy.revocation import DEFAULT_REPORT_INTERVAL, RevocationFollower
from txvnc.proxy.security import RFBConfig
from txvnc.proxy.tokens import extract_token
from txvnc.proxy.vnc import VNCConnector

#: The query parameter with which a page asks for text notices (warnings
#: before an idle timeout or the session cap) beside the RFB stream.
NOTICES_PARAM = "notices"


class ConsoleProxyProtocol(FastWebSocketProtocol):
    """
    The browser side of one console.

    Life: C{onConnect} asks admission (an HTTP error refuses the upgrade),
    C{onOpen} connects to the VNC server, then messages and VNC data are
    relayed until either side closes, which closes the other. Autobahn
    swallows exceptions from C{onConnect} (a bare 500) and C{onOpen} (a
    console left hanging): both are caught here, logged with their
    traceback, and answered with 500 or close code 1011.
    """

    factory: ConsoleProxyFactory
    _log = Logger()
    console: Console
    #: This connection's place in the descriptor budget, handed over by the
    #: HTTP channel it came from (L{txvnc.proxy.site}).
    slot: Slot | None = None
    _lost = False

    def connectionMade(self) -> None:
        self.slot = self.factory.take_handover()
        super().connectionMade()
        self.console = Console(self.factory, self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        try:
            super().connectionLost(reason)
        finally:
            slot, self.slot = self.slot, None
            if slot is not None:
                slot.release()

    # Autobahn accepts a Deferred from onConnect (it wraps the result with
    # txaio.as_future) though its annotation says otherwise.
    def onConnect(self, request: ConnectionRequest) -> Deferred[Any]:  # type: ignore[override]
        return Deferred.fromCoroutine(self._admit(request))

    async def _admit(self, request: ConnectionRequest) -> str | None:
        console = self.console
        client = self.factory.client_address(request)
        try:
            headers = request.headers
            ask = ConsoleRequest.handshake(
                conn_id=console.conn_id,
                client=client,
                origin=headers.get("origin"),
                host=headers.get("host"),
                token=extract_token(request.params, headers.get("cookie")),
                seat=console.seat,
            )
            notices = request.params.get(NOTICES_PARAM) == ["1"]
            verdict = await console.admit(ask, notices)
        except Exception:
            self._log.failure(
                "[{conn_id}] {client}: unexpected error checking a console request",
                conn_id=console.conn_id,
                client=client,
            )
            raise ConnectionDeny(500, INTERNAL_ERROR) from None
        if verdict.refused:
            self.factory.events.handshake_refused(verdict.status)
            raise ConnectionDeny(verdict.status, verdict.reason)
        # noVNC asks for "binary"; old clients ask for nothing.
        return "binary" if "binary" in request.protocols else None

    def onOpen(self) -> None:
        if self._lost:
            # Autobahn opens the WebSocket when onConnect's Deferred fires,
            # even if the browser left while its token was checked: there
            # is nobody to open a console for (it would connect to the VNC
            # server and stay registered for good).
            return
        if self.slot is not None:
            self.slot.admitted()
        try:
            self.console.open()
        except Exception:
            self.console.internal_error(None, "opening the console")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.console.browser_message(payload, isBinary)

    def onPong(self, payload: bytes) -> None:
        self.console.pong()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.console.closed(wasClean, code)


def _peer_address(peer: str) -> str:
    # Autobahn's peer strings look like "tcp:127.0.0.1:5555" or "tcp6:...".
    for prefix in ("tcp4:", "tcp6:", "tcp:"):
        if peer.startswith(prefix):
            return peer[len(prefix) :]
    return peer


class ConsoleProxyFactory(WebSocketServerFactory):
    """
    Holds everything the consoles share, all given to the constructor: the
    reactor and clock, the token API client, the policies and brute-force
    guard (inside L{Admission}), the limits, the audit log and the VNC
    connector; and what they remember together: the open consoles
    (L{ConsoleRegistry}) and the connection counter.

    The revocation follower must see the open consoles and hear when one
    opens or closes, and the factory is where consoles open and close: so
    the factory builds the follower itself (given C{revocation_interval})
    over its own registry, instead of each being handed the other after
    construction. The caller starts it (L{follower} is a service).

    @param clock: the time for every console timer, the guard and the
        follower (default: C{reactor}); the reactor still makes connections.
    @param trusted_proxies: networks whose X-Forwarded-For is believed
        (C{--trusted-proxy}).
    @param revocation_interval: seconds between polls of the revocation
        feed; L{None}: no follower.
    @param connector: connects consoles to VNC servers (default: over the
        reactor, within C{connect_timeout}).
    @param recordings: where and which consoles are recorded (L{None}:
        none is).
    """

    protocol = ConsoleProxyProtocol  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        auth: ConsoleAuthClient,
        allowed_origins: tuple[str, ...] = (),
        connect_timeout: float = 10.0,
        rfb: RFBConfig | None = None,
        allowed_unix_dirs: tuple[str, ...] = (),
        limits: Limits | None = None,
        events: ConsoleEvents | None = None,
        target_policy: TargetPolicy | None = None,
        guard: AuthFailureGuard | None = None,
        audit: AuditLog | None = None,
        node: str = "proxy",
        clock: IReactorTime | None = None,
        trusted_proxies: tuple[Network, ...] = (),
        revocation_interval: float | None = None,
        report_interval: float = DEFAULT_REPORT_INTERVAL,
        connector: VNCConnector | None = None,
        recordings: Recordings | None = None,
    ) -> None:
        super().__init__(server="txvnc", reactor=reactor)
        self.reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor
        self.rfb = rfb if rfb is not None else RFBConfig()
        self.allowed_unix_dirs = allowed_unix_dirs
        self.limits = limits = limits or Limits()
        self.events = events or ConsoleEvents()
        self.counter = ConnectionCounter(
            limits.max_connections, limits.max_connections_per_token
        )
        self._trusted_proxies = tuple(trusted_proxies)
        #: The proxy's connections against its file descriptors.
        self.budget = ConnectionBudget(
            limits.descriptors,
            limits.max_pending_per_address,
            self.counter,
            exempt=self._trusted_proxies,
        )
        self._handover: Slot | None = None
        self.guard = guard if guard is not None else AuthFailureGuard(self._clock)
        self.audit = audit if audit is not None else AuditLog(self._clock)
        self.admission = Admission(
            auth,
            self.guard,
            self.audit,
            self.events,
            allowed_origins=allowed_origins,
            target_policy=target_policy,
            allowed_unix_dirs=allowed_unix_dirs,
        )
        if connector is None:
            connector = VNCConnector(reactor, connect_timeout)
        self.connector = connector
        self.node = node
        self.recordings = recordings
        self.consoles = ConsoleRegistry()
        self._follower = (
            RevocationFollower(
                self._clock,
                auth,
                self.consoles,
                node,
                interval=revocation_interval,
                report_interval=report_interval,
            )
            if revocation_interval is not None
            else None
        )
        self.setProtocolOptions(
            maxFramePayloadSize=limits.max_message_size,
            maxMessagePayloadSize=limits.max_message_size,
            openHandshakeTimeout=limits.handshake_timeout,
            autoPingInterval=limits.keepalive_interval,
            autoPingTimeout=limits.keepalive_timeout,
            closeHandshakeTimeout=5,
            # A browser that breaks the protocol is told why (1002, 1007,
            # 1009) in a close frame before the connection drops, instead of
            # a bare TCP reset.
            failByDrop=False,
            # No permessage-deflate: a console stream is already compressed
            # where it matters, and inflating is a memory bomb waiting.
            perMessageCompressionAccept=lambda offers: None,
            # Origin policy is ours (txvnc.proxy.origin), refusing "null"
            # with the same 403 as any foreign origin; Autobahn still
            # refuses malformed Origin headers with 400.
            allowNullOrigin=True,
        )

    # Set once, in the constructor: read-only so that nothing (a test, the
    # assembly) can swap one under consoles that were given the first.

    @property
    def clock(self) -> IReactorTime:
        return self._clock

    @property
    def trusted_proxies(self) -> tuple[Network, ...]:
        return self._trusted_proxies

    @property
    def follower(self) -> RevocationFollower | None:
        """The revocation follower, for the caller to start, or L{None}."""
        return self._follower

    @property
    def draining(self) -> bool:
        """Set when the service is shutting down: new consoles are told so."""
        return self.counter.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.counter.draining = value

    def hand_over(self, slot: Slot | None) -> None:
        """
        The upgrading HTTP channel's slot, for the WebSocket protocol built
        next (synchronously, in the same call) to take.
        """
        self._handover = slot

    def take_handover(self) -> Slot | None:
        slot, self._handover = self._handover, None
        return slot

    @property
    def closed_bytes_to_vnc(self) -> int:
        return self.consoles.closed_bytes_to_vnc

    @property
    def closed_bytes_from_vnc(self) -> int:
        return self.consoles.closed_bytes_from_vnc

    def client_address(self, request: ConnectionRequest) -> str:
        """
        The browser's address as logs, limits and audit should name it: the
        peer, or the client a trusted proxy names in X-Forwarded-For.
        """
        return client_address(
            _peer_address(request.peer),
            request.headers.get("x-forwarded-for"),
            self._trusted_proxies,
        )

    def opened(self, console: Console) -> bool:
        """
        Count a console in; L{False} when the revocation feed already
        closed it.
        """
        self.consoles.add(console)
        info = console.connect_info
        self.audit.record(
            "console.opened",
            actor="proxy",
            session_id=console.conn_id,
            client=console.client,
            instance_uuid=info.instance_uuid if info else None,
            target=info.target if info else None,
            token_hash=console.token_hash,
        )
        if self._follower is not None:
            return self._follower.opened(console)
        return True

    def recording_tap(self, console: Console) -> ConsoleRecorder | None:
        """The recorder of C{console} when it is recorded, else L{None}."""
        info = console.connect_info
        if self.recordings is None or info is None:
            return None
        return self.recordings.tap_for(console, info)

    def closed(self, console: Console) -> None:
        """Count a console out (last, so a drain sees it logged)."""
        if self._follower is not None:
            self._follower.closed(console)
        self.consoles.remove(console)

    def when_idle(self) -> Deferred[None]:
        """Fires once no console is open (see L{ConsoleRegistry.when_idle})."""
        return self.consoles.when_idle()
