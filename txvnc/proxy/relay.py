"""
How the bytes of one open console move: connect to its VNC server, make
each transport the producer of the other, and pass data both ways (through
the RFB security proxy when the token asks for it), counting it.

Flow control follows L{twisted.protocols.portforward}: while the VNC
connection is being made the browser's socket is paused; once both exist,
each transport is registered as the streaming producer of the other, so a
full send buffer on either side stops reads on the other side and the proxy
never holds more than about a socket buffer per direction.

It also says what the VNC side's events mean for the console: which close
code and reason a lost connection, an unreachable server or a refused RFB
negotiation gives. The data path is kept to one call per read on top of the
fast path's (L{txvnc.proxy.fastpath}).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError, ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from txvnc.client import ConnectInfo
from txvnc.proxy import closecodes
from txvnc.proxy.fastpath import send_now, tune
from txvnc.proxy.limits import SessionTimers, is_user_input
from txvnc.proxy.security import RFBConfig, RFBLink, handshake_lost_reason
from txvnc.proxy.vnc import VNCClientProtocol, VNCConnector


class BrowserSide(Protocol):
    """
    What a console needs of its browser's WebSocket
    (L{txvnc.proxy.fastpath.FastWebSocketProtocol}).
    """

    transport: Any

    @property
    def ws_open(self) -> bool: ...

    def send_binary(self, data: bytes) -> bool: ...

    def send_text(self, text: bytes) -> None: ...

    def close_with(self, code: int, reason: str) -> None: ...

    def relay_binary_frames(self, deliver: Any, max_payload: int) -> None: ...

    @property
    def local_close(self) -> tuple[int | None, bytes | None]: ...

    def unclean_outcome(self) -> str | None: ...


#: The close reason when the VNC connection breaks under an open console.
VNC_CONNECTION_LOST = (
    "The console is unavailable: the connection to its VNC server was lost"
)


class Tap(Protocol):
    """
    What watches a console's streams when it is recorded
    (L{txvnc.proxy.recorder.ConsoleRecorder}): called once per read, it
    must not block.
    """

    def reading(self, producer: Any) -> None: ...

    def to_browser(self, data: bytes) -> None: ...

    def from_browser(self, payloads: list[bytes]) -> None: ...

    def close(self, why: str | None) -> None: ...


class RelayOwner(Protocol):
    """
    What a L{Relay} reads of its console and how it ends it.
    """

    conn_id: str
    client: str
    close_why: str | None
    outcome: str | None

    def close_console(self, code: int, reason: str) -> None: ...

    def internal_error(self, failure: Failure | None, doing: str) -> None: ...


class Relay:
    """
    The two connections of one console and the bytes between them.

    @ivar bytes_to_vnc: bytes sent to the VNC server (from the browser, or
        the RFB layer's own handshake).
    @ivar bytes_from_vnc: bytes sent to the browser.
    """

    _log = Logger()

    def __init__(
        self,
        owner: RelayOwner,
        browser: BrowserSide,
        info: ConnectInfo,
        connector: VNCConnector,
        rfb: RFBConfig,
        clock: IReactorTime,
        max_message_size: int,
        timers: SessionTimers | None = None,
        tap: Tap | None = None,
    ) -> None:
        self._owner = owner
        self._browser = browser
        self._info = info
        self._connector = connector
        self._max_message_size = max_message_size
        self._timers = timers
        #: Sees what the browser is sent and sends (a recording); L{None}
        #: costs the byte path one test per read.
        self._tap = tap
        self.bytes_to_vnc = 0
        self.bytes_from_vnc = 0
        self.vnc_transport: Any = None
        self._connecting: Deferred[Any] | None = None
        self._rfb = RFBLink(self, info, rfb, clock) if rfb.applies_to(info) else None

    @property
    def secured(self) -> bool:
        """The RFB security proxy is between the two sides."""
        return self._rfb is not None

    def start(self) -> None:
        """Connect to the VNC server."""
        # Nothing from the browser is read until there is somewhere to put it.
        self._browser.transport.pauseProducing()
        d = self._connector.connect(self._info, VNCClientProtocol(self))
        self._connecting = d
        d.addCallbacks(self._vnc_connected, self._vnc_failed)
        # An error in either step reaches the close path, not the void.
        d.addErrback(self._owner.internal_error, "connecting to the VNC server")

    def _vnc_connected(self, vnc: VNCClientProtocol) -> None:
        self._connecting = None
        vnc_transport: Any = vnc.transport
        self.vnc_transport = vnc_transport
        browser_transport = self._browser.transport
        tune(vnc_transport)
        tune(browser_transport)
        if self._tap is not None:
            # A recording that falls behind pauses the VNC side's reads.
            self._tap.reading(vnc_transport)
        self._browser.relay_binary_frames(self.from_browser, self._max_message_size)
        # Backpressure both ways: a full browser socket pauses VNC reads,
        # a full VNC socket pauses browser reads.
        browser_transport.registerProducer(vnc_transport, True)
        vnc_transport.registerProducer(browser_transport, True)
        browser_transport.resumeProducing()

    def _vnc_failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError, ConnectingCancelledError):
            return  # the browser left first; the console said so
        owner = self._owner
        info = self._info
        why = failure.getErrorMessage() or failure.type.__name__
        owner.close_why = f"cannot connect to VNC server: {why}"
        self._log.error(
            "[{conn_id}] {client}: cannot connect to {target} "
            "(instance {instance_uuid}): {why}",
            conn_id=owner.conn_id,
            client=owner.client,
            target=info.target,
            instance_uuid=info.instance_uuid,
            why=why,
        )
        if self._browser.ws_open:
            self._browser.transport.resumeProducing()
            owner.outcome = "target_down"
            owner.close_console(
                closecodes.INTERNAL_ERROR,
                "The console is unavailable: cannot reach its VNC server",
            )

    def stop(self) -> None:
        """The browser is gone: stop connecting, or close the VNC side."""
        if self._rfb is not None:
            self._rfb.stop()
        if self._tap is not None:
            self._tap.close(self._owner.close_why)
            self._tap = None
        if self._connecting is not None:
            self._connecting.cancel()
        self.lose_vnc()
        self.vnc_transport = None

    def lose_vnc(self) -> None:
        if self.vnc_transport is not None:
            self.vnc_transport.loseConnection()

    # Browser to VNC server

    def from_browser(self, payloads: list[bytes]) -> None:
        """Binary messages from the browser, in order."""
        if self._timers is not None and any(map(is_user_input, payloads)):
            self._timers.input()
        if self._tap is not None:
            self._tap.from_browser(payloads)
        if self._rfb is not None:
            for payload in payloads:
                self._rfb.from_browser(payload)
        elif self.vnc_transport is not None:
            self.bytes_to_vnc += sum(map(len, payloads))
            send_now(self.vnc_transport, payloads)

    # VNC server to browser (VNCClientProtocol's peer)

    def vnc_data(self, data: bytes) -> None:
        if self._rfb is not None:
            self._rfb.from_vnc(data)
        elif self._browser.send_binary(data):
            self.bytes_from_vnc += len(data)
            if self._tap is not None:
                self._tap.to_browser(data)

    def vnc_lost(self, reason: Failure) -> None:
        self.vnc_transport = None
        owner = self._owner
        rfb = self._rfb
        if rfb is not None and not rfb.session.relaying and owner.close_why is None:
            rfb.failed(handshake_lost_reason(reason))
            return
        if not self._browser.ws_open:
            return
        if reason.check(ConnectionDone):
            # The VNC server hung up: the VM went away or its console was
            # taken; the console is over.
            if owner.close_why is None:
                owner.close_why = "VNC server closed the connection"
            owner.close_console(closecodes.NORMAL, "The VNC server closed the console")
            return
        # A reset or a broken path: the VNC server may well be back in a
        # moment, so the page is told the console is unavailable (which it
        # retries) rather than that it is over.
        if owner.close_why is None:
            owner.close_why = "VNC server reset the connection"
        owner.close_console(closecodes.INTERNAL_ERROR, VNC_CONNECTION_LOST)

    # The RFB layer's ends (txvnc.proxy.security.SecuredRelay)

    @property
    def is_open(self) -> bool:
        return self._browser.ws_open

    def to_browser(self, data: bytes) -> None:
        if self._browser.send_binary(data):
            self.bytes_from_vnc += len(data)
            if self._tap is not None:
                self._tap.to_browser(data)

    def to_vnc(self, data: bytes) -> None:
        if self.vnc_transport is not None:
            self.bytes_to_vnc += len(data)
            send_now(self.vnc_transport, (data,))

    def start_tls(self, options: IOpenSSLClientConnectionCreator) -> None:
        self.vnc_transport.startTLS(options)

    def rfb_ready(self, summary: str) -> None:
        self._log.info(
            "[{conn_id}] {client}: console ready: {summary}",
            conn_id=self._owner.conn_id,
            client=self._owner.client,
            summary=summary,
        )

    def rfb_failed(self, why: str) -> None:
        owner = self._owner
        if owner.close_why is not None:
            return  # already closing for another reason
        info = self._info
        owner.close_why = f"VNC security negotiation failed: {why}"
        self._log.warn(
            "[{conn_id}] {client}: console of {target} (instance "
            "{instance_uuid}) refused: {why}",
            conn_id=owner.conn_id,
            client=owner.client,
            target=info.target,
            instance_uuid=info.instance_uuid,
            why=why,
        )
        self.lose_vnc()
        owner.close_console(closecodes.VNC_SECURITY, why)

    def dropped_note(self) -> str:
        """What the RFB policy dropped, for the closing line."""
        return self._rfb.dropped_note() if self._rfb is not None else ""
