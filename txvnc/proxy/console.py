"""
One console, from the browser's handshake to its closing line: what it is
(its id, client, token and target), what it is doing (connecting, relaying,
timing out, closing) and how it ended (the outcome for the metrics, the
closing summary and the audit event).

The browser's WebSocket (L{txvnc.proxy.websocket.ConsoleProxyProtocol})
only turns network events into calls here; whether the console may open at
all is L{txvnc.proxy.admission}'s question, and how its bytes move is its
L{Relay}'s (L{txvnc.proxy.relay}).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from txvnc.client import ConnectInfo
from txvnc.core.audit import AuditLog
from txvnc.proxy import closecodes
from txvnc.proxy.admission import Admission, ConsoleRequest, Verdict
from txvnc.proxy.events import ConsoleEvents
from txvnc.proxy.limits import (
    ConnectionCounter,
    Limits,
    Refusal,
    Seat,
    SessionTimers,
    session_cap,
)
from txvnc.proxy.relay import BrowserSide, Relay, Tap
from txvnc.proxy.security import RFBConfig
from txvnc.proxy.vnc import VNCConnector


def policy_notice(info: ConnectInfo) -> dict[str, Any]:
    """
    What the token lets the user do, told to the page so that it shows only
    the controls that work; the RFB filters enforce it either way.
    """
    return {
        "type": "policy",
        "view_only": bool(info.view_only),
        "clipboard": info.clipboard or "both",
    }


class ConsoleHost(Protocol):
    """
    What the consoles of one proxy share (the factory holds it).
    """

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def rfb(self) -> RFBConfig: ...

    @property
    def events(self) -> ConsoleEvents: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def connector(self) -> VNCConnector: ...

    @property
    def counter(self) -> ConnectionCounter: ...

    def opened(self, console: Console) -> bool: ...

    def recording_tap(self, console: Console) -> Tap | None: ...

    def closed(self, console: Console) -> None: ...


class Console:
    """
    One console's state and steps. Its WebSocket calls L{admit}, L{open},
    L{browser_message}, L{pong} and L{closed}; its L{Relay} closes it
    (L{close_console}, L{internal_error}) when the VNC side ends or fails;
    the revocation follower calls L{revoke} and L{report}; a shutdown calls
    L{close_console}.
    """

    _log = Logger()

    def __init__(self, host: ConsoleHost, browser: BrowserSide) -> None:
        self._host = host
        self._browser = browser
        self.conn_id = "req-" + str(uuid.uuid4())
        self.client = "-"
        self.seat = Seat(host.counter)
        self.connect_info: ConnectInfo | None = None
        self.token_hash: str | None = None
        #: The revocation feed's number when the token was taken: later
        #: entries that name this console close it.
        self.revocation_cursor = 0
        self.opened_at: float | None = None
        self.close_why: str | None = None
        #: How the console ended, for metrics (see L{ConsoleEvents}).
        self.outcome: str | None = None
        self._refusal: Refusal | None = None
        self._notices = False
        self._timers: SessionTimers | None = None
        #: The console's two connections and the bytes between them, once
        #: it opens.
        self.relay: Relay | None = None

    @property
    def instance_uuid(self) -> str | None:
        info = self.connect_info
        return info.instance_uuid if info is not None else None

    @property
    def transport(self) -> Any:
        """The browser's transport (a shutdown aborts it)."""
        return self._browser.transport

    @property
    def bytes_to_vnc(self) -> int:
        return self.relay.bytes_to_vnc if self.relay is not None else 0

    @property
    def bytes_from_vnc(self) -> int:
        return self.relay.bytes_from_vnc if self.relay is not None else 0

    # The handshake

    async def admit(self, request: ConsoleRequest, notices: bool) -> Verdict:
        """
        Ask admission about this console's handshake and remember the
        answer; C{notices}: the page asked for text notices.
        """
        self.client = request.client
        self._notices = notices
        verdict = await self._host.admission.decide(request)
        if verdict.refused or verdict.close is not None:
            self._refusal = verdict.close
            self.outcome = verdict.outcome
        else:
            info = verdict.info
            assert info is not None
            self.connect_info = info
            self.token_hash = verdict.token_hash
            self.revocation_cursor = info.revocation_cursor
        return verdict

    # Open: connect to the VNC server

    def open(self) -> None:
        """
        The WebSocket is open: close it at once if admission said so, else
        start the timers and connect to the VNC server.
        """
        if self._refusal is not None:
            self.close_console(self._refusal.code, self._refusal.reason)
            return
        host = self._host
        info = self.connect_info
        assert info is not None
        self.opened_at = host.clock.seconds()
        if not host.opened(self):
            # Revoked while the check was on its way back.
            self.revoke("token")
            return
        limits = host.limits
        cap = session_cap(limits, info.expires_at, self.opened_at)
        if limits.idle_timeout > 0 or cap > 0:
            self._timers = SessionTimers(
                host.clock,
                limits.idle_timeout,
                cap,
                self._warn,
                self._expire,
            )
            self._timers.start()
        if limits.keepalive_interval > 0:
            # A page cannot see pings: it hears a notice after each answered
            # one, and takes a silence of a few intervals for a dead path.
            interval = limits.keepalive_interval
            self.send_notice({"type": "keepalive", "seconds": interval})
        self.send_notice(policy_notice(info))
        self.relay = Relay(
            self,
            self._browser,
            info,
            host.connector,
            host.rfb,
            host.clock,
            limits.max_message_size,
            self._timers,
            host.recording_tap(self),
        )
        self.relay.start()

    def internal_error(self, failure: Failure | None, doing: str) -> None:
        """
        Log C{failure} (L{None}: the exception being handled) with its
        traceback, and close the console with 1011.
        """
        self._log.failure(
            "[{conn_id}] {client}: unexpected error " + doing,
            failure,
            conn_id=self.conn_id,
            client=self.client,
        )
        if self.relay is not None:
            self.relay.lose_vnc()
        if self._browser.ws_open:
            self.transport.resumeProducing()
            self.close_console(
                closecodes.INTERNAL_ERROR, closecodes.REASONS[closecodes.INTERNAL_ERROR]
            )

    # Timers and notices

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
        limits = self._host.limits
        if code == closecodes.IDLE_TIMEOUT:
            self.close_why = f"no input for {limits.idle_timeout:g}s (--idle-timeout)"
        elif self._timers and self._timers.max_session != limits.max_session:
            self.close_why = "its token expired (--end-at-token-expiry)"
        else:
            self.close_why = f"open for {limits.max_session:g}s (--max-session)"
        self.close_console(code, closecodes.REASONS[code])

    def send_notice(self, notice: dict[str, Any]) -> None:
        """
        Tell a page that asked for notices (C{?notices=1}) something beside
        the RFB stream, as a JSON text message; noVNC ignores text messages.
        """
        if self._notices:
            self._browser.send_text(json.dumps(notice).encode("utf-8"))

    def pong(self) -> None:
        """The browser answered a keepalive ping."""
        self.send_notice({"type": "keepalive"})

    # Closing on request

    def close_console(self, code: int, reason: str) -> None:
        """
        Start the closing handshake with C{code} (any valid code, see
        L{txvnc.proxy.fastpath.FastWebSocketProtocol.close_with}).
        """
        if self._browser.ws_open:
            if self.outcome is None:
                self.outcome = closecodes.OUTCOMES.get(code)
            self._browser.close_with(code, reason)

    def revoke(self, kind: str) -> None:
        """
        Close this console because the revocation feed named it: 4006 when
        an administrator closed it, else 4001.
        """
        code = closecodes.KILLED if kind == "session" else closecodes.REVOKED
        if self.close_why is None:
            self.close_why = (
                "closed by an administrator" if kind == "session" else f"{kind} revoked"
            )
        if self._browser.ws_open:
            self.transport.resumeProducing()
            self.close_console(code, closecodes.REASONS[code])

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

    # What the browser says

    def browser_message(self, payload: bytes, is_binary: bool) -> None:
        """A message Autobahn parsed (the fast path took the others)."""
        if not is_binary:
            self.close_why = "text message on a binary console"
            self.close_console(
                closecodes.UNSUPPORTED_DATA, "This console accepts binary messages only"
            )
            return
        if self.relay is not None:
            self.relay.from_browser([payload])

    # The end

    def closed(self, was_clean: bool, code: int | None) -> None:
        """
        The browser's connection is gone: stop everything, give back the
        slots, and (for a console that opened) write the closing line and
        the audit event.
        """
        relay = self.relay
        if relay is not None:
            relay.stop()
        if self._timers is not None:
            self._timers.stop()
        self.seat.release()
        host = self._host
        browser = self._browser
        if self.opened_at is None:
            if self.outcome is None:
                self.outcome = browser.unclean_outcome() or "abandoned"
            host.events.console_ended(self.outcome, opened=False)
            return  # never opened: the refusal was already logged
        local_code, local_reason = browser.local_close
        self.outcome, self.close_why = closecodes.ending(
            self.outcome,
            self.close_why,
            local_code,
            local_reason,
            browser.unclean_outcome(),
            was_clean,
            code,
        )
        host.events.console_ended(self.outcome, opened=True)
        info = self.connect_info
        assert info is not None
        host.audit.record(
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
            dropped=relay.dropped_note() if relay is not None else "",
            why=self.close_why,
            bytes_to_vnc=self.bytes_to_vnc,
            bytes_from_vnc=self.bytes_from_vnc,
            duration=host.clock.seconds() - self.opened_at,
        )
        # Last: waiters on when_idle (a drain) see the line above written.
        host.closed(self)
