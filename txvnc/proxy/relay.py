"""
The relay: one browser WebSocket paired with one TCP connection to a VNC
server, bytes passed both ways untouched.

Decisions (where the token is, whether the origin may connect, what the
token grants) are made by the pure functions of L{txvnc.proxy.tokens},
L{txvnc.proxy.origin} and by the token API; the protocols here only turn
network events into those calls and back.

Flow control follows L{twisted.protocols.portforward}: while the VNC
connection is being made the browser's socket is paused; once both exist,
each transport is registered as the streaming producer of the other, so a
full send buffer on either side stops reads on the other side and the proxy
never holds more than about a socket buffer per direction.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectingCancelledError, ConnectionDone
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from txvnc.client import (
    ConnectInfo,
    ConsoleAuthClient,
    ConsoleAuthError,
    ConsoleAuthUnavailable,
)
from txvnc.core.audit import AuditLog
from txvnc.core.forwarded import Network, client_address
from txvnc.core.targets import TargetPolicy, unix_path_allowed
from txvnc.core.tokens import token_hash, token_ref
from txvnc.proxy import closecodes
from txvnc.proxy.events import ConsoleEvents
from txvnc.proxy.fastpath import BinaryFrameReader, binary_frame_header, send_now, tune
from txvnc.proxy.guard import AuthFailureGuard, address_of
from txvnc.proxy.limits import (
    ConnectionCounter,
    Limits,
    Refusal,
    SessionTimers,
    is_user_input,
)
from txvnc.proxy.origin import origin_allowed
from txvnc.proxy.revocation import RevocationFollower
from txvnc.proxy.security import RFBConfig, RFBError, RFBSession
from txvnc.proxy.tokens import extract_token

#: What the browser is told when its token does not open a console; the
#: same words nova uses, and the same for unknown, expired and revoked.
INVALID_TOKEN = "The token is invalid or has expired"

#: The close reason when the VNC connection breaks under an open console.
VNC_CONNECTION_LOST = (
    "The console is unavailable: the connection to its VNC server was lost"
)

#: What a client over its failed-check budget is told (HTTP 429).
TOO_MANY_FAILURES = "Too many failed console requests; try again later"
#: What the browser is told when the token names a target the policy refuses.
TARGET_NOT_ALLOWED = "The console's target is not allowed"

#: Largest message accepted from the browser by default. noVNC's biggest
#: message is a clipboard paste; this bounds what one message can make the
#: proxy hold.
MAX_MESSAGE_SIZE = Limits.max_message_size

#: The query parameter with which a page asks for text notices (warnings
#: before an idle timeout or the session cap) beside the RFB stream.
NOTICES_PARAM = "notices"


def close_reason(text: str) -> str:
    """
    C{text} cut to the 123 UTF-8 bytes a close frame can carry.
    """
    data = text.encode("utf-8")
    if len(data) <= 123:
        return text
    return data[:120].decode("utf-8", "ignore") + "..."


class VNCClientProtocol(Protocol):
    """
    The VNC server side of one console: forwards everything to its console.
    """

    def __init__(self, console: ConsoleProxyProtocol) -> None:
        self._console = console

    def dataReceived(self, data: bytes) -> None:
        self._console.vnc_data(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._console.vnc_lost(reason)


class ConsoleProxyProtocol(WebSocketServerProtocol):
    """
    The browser side of one console.

    Life: C{onConnect} checks origin and token (HTTP errors refuse the
    upgrade), C{onOpen} connects to the VNC server, then messages and VNC
    data are relayed until either side closes, which closes the other.
    """

    factory: ConsoleProxyFactory
    _log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.conn_id = "req-" + str(uuid.uuid4())
        self.client = "-"
        self.connect_info: ConnectInfo | None = None
        self._connecting: Deferred[Any] | None = None
        self._vnc_transport: ITransport | None = None
        self._frames: BinaryFrameReader | None = None
        self._rfb: RFBSession | None = None
        self._rfb_deadline: Any = None
        self.bytes_to_vnc = 0
        self.bytes_from_vnc = 0
        self.opened_at: float | None = None
        self.close_why: str | None = None
        #: How the console ended, for metrics (see L{ConsoleEvents}).
        self.outcome: str | None = None
        self._refusal: Refusal | None = None
        self._counted = False
        self._token_key: str | None = None
        self._notices = False
        self._timers: SessionTimers | None = None
        self.token_hash: str | None = None
        #: The revocation feed's number when the token was taken: later
        #: entries that name this console close it.
        self.revocation_cursor = 0

    @property
    def instance_uuid(self) -> str | None:
        info = self.connect_info
        return info.instance_uuid if info is not None else None

    # Opening handshake

    # Autobahn accepts a Deferred from onConnect (it wraps the result with
    # txaio.as_future) though its annotation says otherwise.
    def onConnect(self, request: ConnectionRequest) -> Deferred[Any]:  # type: ignore[override]
        self.client = self.factory.client_address(request)
        self._notices = request.params.get(NOTICES_PARAM) == ["1"]
        return Deferred.fromCoroutine(self._authorize(request))

    async def _authorize(self, request: ConnectionRequest) -> str | None:
        try:
            return await self._decide(request)
        except ConnectionDeny as e:
            if self.outcome is None:
                self.outcome = "refused"
            self.factory.events.handshake_refused(e.code)
            raise
        except Exception:
            self._log.failure(
                "[{conn_id}] {client}: unexpected error checking a console request",
                conn_id=self.conn_id,
                client=self.client,
            )
            raise ConnectionDeny(500, "Internal error") from None

    async def _decide(self, request: ConnectionRequest) -> str | None:
        factory = self.factory
        headers = request.headers
        origin = headers.get("origin")
        if not origin_allowed(origin, headers.get("host"), factory.allowed_origins):
            self._log.warn(
                "[{conn_id}] {client}: refused: origin {origin!r} is not allowed",
                conn_id=self.conn_id,
                client=self.client,
                origin=origin,
            )
            self.outcome = "bad_origin"
            raise ConnectionDeny(403, "Origin not allowed")

        address = address_of(self.client)
        if factory.guard.blocked(address):
            self.outcome = "too_many_failures"
            raise ConnectionDeny(429, TOO_MANY_FAILURES)

        # Over a limit, or shutting down: the upgrade is accepted so that
        # the page gets a close code and a reason it can show, and onOpen
        # closes at once (no token check, no VNC connection).
        subprotocol = "binary" if "binary" in request.protocols else None
        refusal = factory.admit()
        if refusal is not None:
            return self._refuse(refusal, subprotocol)
        self._counted = True

        token = extract_token(request.params, headers.get("cookie"))
        if token is None:
            self._log.info(
                "[{conn_id}] {client}: refused: no token in the request",
                conn_id=self.conn_id,
                client=self.client,
            )
            self.outcome = "no_token"
            self._auth_failed(address, None, "no token")
            raise ConnectionDeny(403, INVALID_TOKEN)

        ref = token_ref(token)
        hashed = token_hash(token)
        try:
            with factory.events.token_check() as check:
                info = await factory.auth.use_token(token)
                check.result = "invalid" if info is None else "valid"
        except ConsoleAuthUnavailable as e:
            self._log.error(
                "[{conn_id}] {client}: cannot check token {token_ref}: {why}",
                conn_id=self.conn_id,
                client=self.client,
                token_ref=ref,
                why=str(e),
            )
            self.outcome = "auth_unavailable"
            raise ConnectionDeny(503, "Console authentication is unavailable") from None
        except ConsoleAuthError as e:
            # The API refused the proxy itself: a configuration error (wrong
            # key), not the user's fault, and not worth a traceback.
            self._log.critical(
                "[{conn_id}] {client}: the token API refused this proxy "
                "({status}: {why}); check its API key (--api-key-file)",
                conn_id=self.conn_id,
                client=self.client,
                status=e.status,
                why=e.message,
            )
            self.outcome = "auth_refused"
            raise ConnectionDeny(503, "Console authentication is unavailable") from None
        if info is None:
            # The seed's "handler exception: The token '...' is invalid or
            # has expired", with a hash in place of the token.
            self._log.info(
                "[{conn_id}] {client}: handler exception: The token {token_ref} "
                "is invalid or has expired",
                conn_id=self.conn_id,
                client=self.client,
                token_ref=ref,
            )
            self.outcome = "bad_token"
            self._auth_failed(address, hashed, "invalid token")
            raise ConnectionDeny(403, INVALID_TOKEN)

        if not self._target_allowed(info):
            # The API should never have minted it; the proxy's own policy
            # (--allowed-target, --allowed-unix-dir) has the last word before
            # any packet goes to the target.
            self._log.warn(
                "[{conn_id}] {client}: refused: token {token_ref} names "
                "{target}, outside this proxy's target policy",
                conn_id=self.conn_id,
                client=self.client,
                token_ref=ref,
                target=info.target,
            )
            factory.audit.record(
                "console.refused",
                actor="proxy",
                client=self.client,
                instance_uuid=info.instance_uuid,
                target=info.target,
                token_hash=hashed,
                reason="target not allowed",
            )
            self.outcome = "target_not_allowed"
            raise ConnectionDeny(403, TARGET_NOT_ALLOWED)

        refusal = factory.counter.enter_token(hashed)
        if refusal is not None:
            self._log.warn(
                "[{conn_id}] {client}: refused: token {token_ref} already has "
                "{count} console(s) open (--max-connections-per-token)",
                conn_id=self.conn_id,
                client=self.client,
                token_ref=ref,
                count=factory.counter.for_token(hashed),
            )
            return self._refuse(refusal, subprotocol)
        self._token_key = hashed

        self.connect_info = info
        self.token_hash = hashed
        self.revocation_cursor = info.revocation_cursor
        self._log.info(
            "[{conn_id}] {client}: token {token_ref} accepted, instance "
            "{instance_uuid}, target {target}",
            conn_id=self.conn_id,
            client=self.client,
            token_ref=ref,
            instance_uuid=info.instance_uuid,
            target=info.target,
        )
        # noVNC asks for "binary"; old clients ask for nothing.
        return subprotocol

    def _refuse(self, refusal: Refusal, subprotocol: str | None) -> str | None:
        if refusal.code == closecodes.TRY_AGAIN_LATER:
            self._log.warn(
                "[{conn_id}] {client}: refused: {open} consoles open or opening "
                "(--max-connections)",
                conn_id=self.conn_id,
                client=self.client,
                open=self.factory.counter.total,
            )
        self._refusal = refusal
        self.outcome = refusal.outcome
        return subprotocol

    def _auth_failed(self, address: str, hashed: str | None, why: str) -> None:
        self.factory.auth_failed(self.client, address, hashed, why)

    def _target_allowed(self, info: ConnectInfo) -> bool:
        return self.factory.target_allowed(info)

    @property
    def _stream(self) -> Any:
        """
        The browser's transport as what it is: a TCP or TLS transport, a
        push producer and a consumer (Autobahn types it as a bare
        ITransport).
        """
        return self.transport

    # Open: connect to the VNC server

    def onOpen(self) -> None:
        # Autobahn calls onOpen inside the handshake's Deferred chain, where
        # an exception is swallowed and the console would hang half open.
        try:
            self._open()
        except Exception:
            self._internal_error("opening the console")

    def _internal_error(self, doing: str, failure: Failure | None = None) -> None:
        """
        Log C{failure} (by default the exception being handled) with its
        traceback, and close the console with 1011.
        """
        self._log.failure(
            "[{conn_id}] {client}: unexpected error " + doing,
            failure,
            conn_id=self.conn_id,
            client=self.client,
        )
        if self._vnc_transport is not None:
            self._vnc_transport.loseConnection()
        if self.state == self.STATE_OPEN:
            self._stream.resumeProducing()
            self.close_console(
                closecodes.INTERNAL_ERROR, closecodes.REASONS[closecodes.INTERNAL_ERROR]
            )

    def _open(self) -> None:
        if self._refusal is not None:
            self.close_console(self._refusal.code, self._refusal.reason)
            return
        info = self.connect_info
        assert info is not None
        self.opened_at = self.factory.clock.seconds()
        if not self.factory.opened(self):
            # Revoked while the check was on its way back.
            self.revoke("token")
            return
        limits = self.factory.limits
        if limits.idle_timeout > 0 or limits.max_session > 0:
            self._timers = SessionTimers(
                self.factory.clock,
                limits.idle_timeout,
                limits.max_session,
                self._warn,
                self._expire,
            )
            self._timers.start()
        if limits.keepalive_interval > 0:
            # A page cannot see pings: it hears a notice after each answered
            # one, and takes a silence of a few intervals for a dead path.
            interval = limits.keepalive_interval
            self.send_notice({"type": "keepalive", "seconds": interval})
        self._log.info(
            "[{conn_id}] {client}: connecting to: {target} "
            "(instance {instance_uuid})",
            conn_id=self.conn_id,
            client=self.client,
            target=info.target,
            instance_uuid=info.instance_uuid,
        )
        if self.factory.rfb.applies_to(info):
            self._rfb = RFBSession(info, self.factory.rfb, self)
            self._rfb_deadline = self.factory.clock.callLater(
                self.factory.rfb.handshake_timeout, self._rfb_too_slow
            )
        # Nothing from the browser is read until there is somewhere to put it.
        self._stream.pauseProducing()
        vnc = VNCClientProtocol(self)
        if info.unix_path is not None:
            d = self.factory.connect_vnc_unix(info.unix_path, vnc)
        else:
            d = self.factory.connect_vnc(info.host, info.port, vnc)
        self._connecting = d
        d.addCallbacks(self._vnc_connected, self._vnc_failed)
        # An error in either step reaches the close path, not the void.
        d.addErrback(lambda f: self._internal_error("connecting to the VNC server", f))

    def _vnc_connected(self, vnc: VNCClientProtocol) -> None:
        self._connecting = None
        vnc_transport: Any = vnc.transport
        self._vnc_transport = vnc_transport
        tune(vnc_transport)
        tune(self.transport)
        self._frames = BinaryFrameReader(
            self._relay_to_vnc, self.factory.limits.max_message_size
        )
        # Backpressure both ways: a full browser socket pauses VNC reads,
        # a full VNC socket pauses browser reads.
        self._stream.registerProducer(vnc_transport, True)
        vnc_transport.registerProducer(self._stream, True)
        self._stream.resumeProducing()

    def _vnc_failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError, ConnectingCancelledError):
            return  # the browser left first; onClose said so
        info = self.connect_info
        assert info is not None
        why = failure.getErrorMessage() or failure.type.__name__
        self.close_why = f"cannot connect to VNC server: {why}"
        self._log.error(
            "[{conn_id}] {client}: cannot connect to {target} "
            "(instance {instance_uuid}): {why}",
            conn_id=self.conn_id,
            client=self.client,
            target=info.target,
            instance_uuid=info.instance_uuid,
            why=why,
        )
        if self.state == self.STATE_OPEN:
            self._stream.resumeProducing()
            self.outcome = "target_down"
            self.close_console(
                closecodes.INTERNAL_ERROR,
                "The console is unavailable: cannot reach its VNC server",
            )

    def _warn(self, kind: str, seconds: float) -> None:
        what = "idle timeout" if kind == "idle" else "session time limit"
        self._log.info(
            "[{conn_id}] {client}: warning the page: {what} in {seconds:.0f}s",
            conn_id=self.conn_id,
            client=self.client,
            what=what,
            seconds=seconds,
        )
        self.send_notice({"type": f"{kind}-warning", "seconds": round(seconds)})

    def _expire(self, code: int) -> None:
        limits = self.factory.limits
        if code == closecodes.IDLE_TIMEOUT:
            self.close_why = f"no input for {limits.idle_timeout:g}s (--idle-timeout)"
        else:
            self.close_why = f"open for {limits.max_session:g}s (--max-session)"
        self.close_console(code, closecodes.REASONS[code])

    def send_notice(self, notice: dict[str, Any]) -> None:
        """
        Tell a page that asked for notices (C{?notices=1}) something beside
        the RFB stream, as a JSON text message; noVNC ignores text messages.
        """
        if self._notices and self.state == self.STATE_OPEN:
            self.sendMessage(json.dumps(notice).encode("utf-8"), isBinary=False)

    def onPong(self, payload: bytes) -> None:
        self.send_notice({"type": "keepalive"})

    def close_console(self, code: int, reason: str) -> None:
        """
        Start the closing handshake with any valid code. Autobahn's
        C{sendClose} takes only 1000 and 3000-4999, but a server must also
        be able to say 1003 and 1011 (RFC 6455 section 7.4.1); this is the
        path Autobahn itself takes to fail a connection with such codes.
        """
        if self.state == self.STATE_OPEN:
            if self.outcome is None:
                self.outcome = closecodes.OUTCOMES.get(code)
            self.sendCloseFrame(
                code=code, reasonUtf8=close_reason(reason).encode("utf-8")
            )

    def revoke(self, kind: str) -> None:
        """
        Close this console because the revocation feed named it: 4006 when
        an administrator closed it, else 4001.
        """
        code, reason = (
            (closecodes.KILLED, closecodes.REASONS[closecodes.KILLED])
            if kind == "session"
            else (closecodes.REVOKED, closecodes.REASONS[closecodes.REVOKED])
        )
        if self.close_why is None:
            self.close_why = (
                "closed by an administrator" if kind == "session" else f"{kind} revoked"
            )
        if self.state == self.STATE_OPEN:
            self._stream.resumeProducing()
            self.close_console(code, reason)

    def report(self) -> dict[str, Any]:
        """
        This console as the proxy reports it to the token API.
        """
        info = self.connect_info
        assert info is not None
        return {
            "id": self.conn_id,
            "instance_uuid": info.instance_uuid,
            "token_hash": self.token_hash,
            "client": self.client,
            "host": info.host,
            "port": info.port,
            "opened_at": self.opened_at,
            "bytes_to_vnc": self.bytes_to_vnc,
            "bytes_from_vnc": self.bytes_from_vnc,
        }

    # Relay

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's adapter builds a debug log line for every read (a few
        # microseconds each, even with debug off); go straight to parsing.
        self._dataReceived(data)

    def _dataReceived(self, data: bytes) -> None:
        # Complete binary frames skip Autobahn's per-frame work (see
        # txvnc.proxy.fastpath); everything else is Autobahn's.
        if self._frames is not None and self.state == self.STATE_OPEN:
            data = self._take_binary_frames(data)
            if not data:
                return
        super()._dataReceived(data)

    def _take_binary_frames(self, data: bytes) -> bytes:
        """
        Relay the complete binary frames in C{data}; return what Autobahn
        must see. Autobahn finishes any frame or message it has started.
        """
        assert self._frames is not None
        if self.current_frame is not None:
            need = self.current_frame.length - self.current_frame_masker.pointer()
            if len(data) <= need:
                return data
            super()._dataReceived(data[:need])
            data = data[need:]
            if self.state != self.STATE_OPEN or self.current_frame is not None:
                return data
        if self.inside_message:
            return data
        if self.data:
            data, self.data = self.data + data, b""
        return self._frames.feed(data)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.close_why = "text message on a binary console"
            self.close_console(
                closecodes.UNSUPPORTED_DATA, "This console accepts binary messages only"
            )
            return
        self._relay_to_vnc([payload])

    def _relay_to_vnc(self, payloads: list[bytes]) -> None:
        if self._timers is not None and any(map(is_user_input, payloads)):
            self._timers.input()
        if self._rfb is not None:
            for payload in payloads:
                self._rfb_step(self._rfb.from_browser, payload)
        elif self._vnc_transport is not None:
            self.bytes_to_vnc += sum(map(len, payloads))
            send_now(self._vnc_transport, payloads)

    def vnc_data(self, data: bytes) -> None:
        if self._rfb is not None:
            self._rfb_step(self._rfb.from_vnc, data)
        else:
            self.to_browser(data)

    # The RFB security proxy's hooks (txvnc.proxy.security.Endpoints)

    def _rfb_step(self, step: Any, data: bytes) -> None:
        if self.state != self.STATE_OPEN:
            return
        try:
            step(data)
        except RFBError as e:
            self._rfb_failed(str(e))

    def _rfb_failed(self, why: str) -> None:
        self._cancel_rfb_deadline()
        if self.close_why is not None:
            return  # already closing for another reason
        info = self.connect_info
        assert info is not None
        self.close_why = f"VNC security negotiation failed: {why}"
        self._log.warn(
            "[{conn_id}] {client}: console of {target} (instance "
            "{instance_uuid}) refused: {why}",
            conn_id=self.conn_id,
            client=self.client,
            target=info.target,
            instance_uuid=info.instance_uuid,
            why=why,
        )
        if self._vnc_transport is not None:
            self._vnc_transport.loseConnection()
        self.close_console(closecodes.VNC_SECURITY, why)

    def to_browser(self, data: bytes) -> None:
        if self.state == self.STATE_OPEN:
            self.bytes_from_vnc += len(data)
            if self.send_queue:
                self.sendMessage(data, isBinary=True)
            else:
                send_now(self.transport, (binary_frame_header(len(data)), data))

    def to_vnc(self, data: bytes) -> None:
        if self._vnc_transport is not None:
            self.bytes_to_vnc += len(data)
            send_now(self._vnc_transport, (data,))

    def start_tls(self, options: Any) -> None:
        transport: Any = self._vnc_transport
        transport.startTLS(options)

    def _rfb_too_slow(self) -> None:
        self._rfb_deadline = None
        self._rfb_failed(
            "the VNC server did not complete the RFB handshake within "
            f"{self.factory.rfb.handshake_timeout:g}s"
        )

    def _cancel_rfb_deadline(self) -> None:
        if self._rfb_deadline is not None and self._rfb_deadline.active():
            self._rfb_deadline.cancel()
        self._rfb_deadline = None

    def rfb_ready(self, summary: str) -> None:
        self._cancel_rfb_deadline()
        self._log.info(
            "[{conn_id}] {client}: console ready: {summary}",
            conn_id=self.conn_id,
            client=self.client,
            summary=summary,
        )

    def vnc_lost(self, reason: Failure) -> None:
        self._vnc_transport = None
        if self._rfb is not None and not self._rfb.relaying and self.close_why is None:
            self._rfb_failed(handshake_lost_reason(reason))
            return
        if self.state == self.STATE_OPEN:
            if reason.check(ConnectionDone):
                # The VNC server hung up: the VM went away or its console
                # was taken; the console is over.
                if self.close_why is None:
                    self.close_why = "VNC server closed the connection"
                self.close_console(
                    closecodes.NORMAL, "The VNC server closed the console"
                )
                return
            # A reset or a broken path: the VNC server may well be back in
            # a moment, so the page is told the console is unavailable
            # (which it retries) rather than that it is over.
            if self.close_why is None:
                self.close_why = "VNC server reset the connection"
            self.close_console(closecodes.INTERNAL_ERROR, VNC_CONNECTION_LOST)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._cancel_rfb_deadline()
        if self._connecting is not None:
            self._connecting.cancel()
        if self._vnc_transport is not None:
            self._vnc_transport.loseConnection()
            self._vnc_transport = None
        if self._timers is not None:
            self._timers.stop()
        self._release()
        if self.opened_at is None:
            if self.outcome is None:
                self.outcome = self._unclean_outcome() or "abandoned"
            self.factory.events.console_ended(self.outcome, opened=False)
            return  # never opened: the refusal was already logged
        if self.outcome is None:
            self.outcome = (
                closecodes.OUTCOMES.get(self.localCloseCode or 0)
                or self._unclean_outcome()
                or "ok"
            )
        if self.close_why is None and self.outcome == "keepalive_timeout":
            self.close_why = "no answer to a keepalive ping"
        self.factory.events.console_ended(self.outcome, opened=True)
        info = self.connect_info
        assert info is not None
        if self.close_why is None:
            if self.localCloseCode not in (None, closecodes.NORMAL):
                # Autobahn failed the connection: the browser broke the protocol.
                reason_bytes: bytes = self.localCloseReason or b""
                self.close_why = (
                    f"closed by the proxy ({self.localCloseCode}: "
                    f"{reason_bytes.decode('utf-8', 'replace')})"
                )
            elif wasClean:
                self.close_why = f"browser closed ({code})"
            else:
                self.close_why = "browser connection lost"
        self.factory.audit.record(
            "console.closed",
            actor="proxy",
            session_id=self.conn_id,
            client=self.client,
            instance_uuid=info.instance_uuid,
            target=info.target,
            token_hash=self.token_hash,
            why=self.close_why,
            bytes_to_vnc=self.bytes_to_vnc,
            bytes_from_vnc=self.bytes_from_vnc,
        )
        self._log.info(
            "[{conn_id}] {client}: console closed, instance {instance_uuid}, "
            "target {target}: {why}; {bytes_to_vnc} bytes to VNC, "
            "{bytes_from_vnc} bytes from VNC in {duration:.1f}s{dropped}",
            conn_id=self.conn_id,
            client=self.client,
            instance_uuid=info.instance_uuid,
            target=info.target,
            dropped=_dropped(self._rfb),
            why=self.close_why,
            bytes_to_vnc=self.bytes_to_vnc,
            bytes_from_vnc=self.bytes_from_vnc,
            duration=self.factory.clock.seconds() - self.opened_at,
        )
        # Last: waiters on when_idle (a drain) see the line above written.
        self.factory.closed(self)

    def _unclean_outcome(self) -> str | None:
        why = self.wasNotCleanReason or ""
        if "opening handshake timeout" in why:
            return "handshake_timeout"
        if "ping timeout" in why:
            return "keepalive_timeout"
        return None

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.factory.counter.leave()
        if self._token_key is not None:
            self.factory.counter.leave_token(self._token_key)
            self._token_key = None


def handshake_lost_reason(reason: Failure | None) -> str:
    """
    Why a VNC connection ended before its RFB handshake did, in words: TLS
    errors name what OpenSSL refused (e.g. "certificate verify failed").
    """
    if reason is not None and reason.check(SSL.Error):
        details = [
            str(part[2] if isinstance(part, tuple) and len(part) == 3 else part)
            for part in (reason.value.args[0] if reason.value.args else [])
        ]
        why = "; ".join(d for d in details if d) or "handshake failed"
        return f"TLS with the VNC server failed: {why}"
    why = reason.getErrorMessage() if reason is not None else "closed"
    return f"the VNC server closed the connection during the handshake ({why})"


def _dropped(rfb: RFBSession | None) -> str:
    if rfb is None or not rfb.dropped:
        return ""
    counts = ", ".join(f"{n} {what}" for what, n in sorted(rfb.dropped.items()))
    return f"; policy dropped {counts}"


def _client_address(peer: str) -> str:
    # Autobahn's peer strings look like "tcp:127.0.0.1:5555" or "tcp6:...".
    for prefix in ("tcp4:", "tcp6:", "tcp:"):
        if peer.startswith(prefix):
            return peer[len(prefix) :]
    return peer


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


class ConsoleProxyFactory(WebSocketServerFactory):
    """
    Holds everything the console protocols share: the reactor, the token API
    client, the origin and target policies, the brute-force guard, the audit
    log, the revocation follower and the timeouts.

    @ivar consoles: the consoles currently open, for shutdown and metrics.
    @ivar node: this proxy's name in the token API's session list.
    @ivar follower: set when the proxy follows the revocation feed.
    """

    protocol = ConsoleProxyProtocol  # type: ignore[assignment]
    _log = Logger()

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
    ) -> None:
        super().__init__(server="txvnc", reactor=reactor)
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.auth = auth
        self.allowed_origins = allowed_origins
        self.connect_timeout = connect_timeout
        self.rfb = rfb if rfb is not None else RFBConfig()
        self.allowed_unix_dirs = allowed_unix_dirs
        self.limits = limits = limits or Limits()
        self.events = events or ConsoleEvents()
        self.counter = ConnectionCounter(
            limits.max_connections, limits.max_connections_per_token
        )
        #: Networks whose X-Forwarded-For is believed (--trusted-proxy).
        self.trusted_proxies: tuple[Network, ...] = ()
        #: Set when the service is shutting down: new consoles are told so.
        self.draining = False
        self.consoles: set[ConsoleProxyProtocol] = set()
        self._idle_waiters: list[Deferred[None]] = []
        #: Bytes relayed by consoles already closed (for metrics).
        self.closed_bytes_to_vnc = 0
        self.closed_bytes_from_vnc = 0
        self.target_policy = (
            target_policy if target_policy is not None else TargetPolicy.parse([])
        )
        self.guard = guard if guard is not None else AuthFailureGuard(reactor)
        self.audit = audit if audit is not None else AuditLog(reactor)
        self.node = node
        self.follower: RevocationFollower | None = None
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

    def auth_failed(
        self, client: str, address: str, hashed: str | None, why: str
    ) -> None:
        """
        A request named no token, or one the API does not know: audit it
        and count it against C{address} in the brute-force guard (the
        WebSocket handshake and the page's token check alike).
        """
        self.audit.record(
            "console.refused",
            actor="proxy",
            client=client,
            token_hash=hashed,
            reason=why,
        )
        if self.guard.failed(address):
            self._log.warn(
                "{address}: over {limit} failed console requests in a minute; "
                "refusing it with 429 for {cooldown:g}s",
                address=address,
                limit=self.guard.max_failures,
                cooldown=self.guard.cooldown,
            )

    def target_allowed(self, info: ConnectInfo) -> bool:
        """
        Whether this proxy's own policy (C{--allowed-target},
        C{--allowed-unix-dir}) lets a console reach C{info}'s target.
        """
        if info.unix_path is not None:
            return unix_path_allowed(info.unix_path, self.allowed_unix_dirs)
        return self.target_policy.allows(info.host, info.port)

    def connect_vnc(
        self, host: str, port: int, protocol: VNCClientProtocol
    ) -> Deferred[VNCClientProtocol]:
        endpoint = HostnameEndpoint(
            self.reactor, host, port, timeout=self.connect_timeout
        )
        d: Deferred[Any] = endpoint.connect(_OneConsole(protocol))
        return d

    def connect_vnc_unix(
        self, path: str, protocol: VNCClientProtocol
    ) -> Deferred[VNCClientProtocol]:
        endpoint = UNIXClientEndpoint(self.reactor, path, timeout=self.connect_timeout)
        d: Deferred[Any] = endpoint.connect(_OneConsole(protocol))
        return d

    def client_address(self, request: ConnectionRequest) -> str:
        """
        The browser's address as logs, limits and audit should name it: the
        peer, or the client a trusted proxy names in X-Forwarded-For.
        """
        return client_address(
            _client_address(request.peer),
            request.headers.get("x-forwarded-for"),
            self.trusted_proxies,
        )

    def admit(self) -> Refusal | None:
        """
        Take a console slot, or say why there is none.
        """
        if self.draining:
            return Refusal(
                closecodes.GOING_AWAY,
                closecodes.REASONS[closecodes.GOING_AWAY],
                "shutdown",
            )
        return self.counter.enter()

    def opened(self, console: ConsoleProxyProtocol) -> bool:
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
        if self.follower is not None:
            return self.follower.opened(console)
        return True

    def closed(self, console: ConsoleProxyProtocol) -> None:
        self.consoles.discard(console)
        self.closed_bytes_to_vnc += console.bytes_to_vnc
        self.closed_bytes_from_vnc += console.bytes_from_vnc
        if self.follower is not None:
            self.follower.closed(console)
        if not self.consoles:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def when_idle(self) -> Deferred[None]:
        """
        Fires once no console is open (at once when none is). Autobahn's
        per-connection C{is_closed} can fire before C{onClose} has run, so
        waiting on those would let a drain finish before the consoles'
        closing lines are logged and their counts are in.
        """
        d: Deferred[None] = Deferred()
        if self.consoles:
            self._idle_waiters.append(d)
        else:
            d.callback(None)
        return d
