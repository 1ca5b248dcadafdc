"""
The limits an operator sets on consoles, and the small pieces of state that
enforce them without any I/O: a counter of open consoles (global and per
token) and a pair of per-console timers (idle, maximum session), all on a
clock passed in so tests drive them with L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from txvnc.proxy import closecodes

#: Seconds before an idle timeout or the session cap at which the page is
#: warned.
WARNING_LEAD = 60.0

#: RFB client-to-server message types that a person causes: KeyEvent,
#: PointerEvent, ClientCutText, and QEMU's extended key event (255). The
#: rest (update requests, encodings, fences) are sent by noVNC on its own.
USER_INPUT_TYPES = frozenset({4, 5, 6, 255})


@dataclass(frozen=True)
class Limits:
    """
    What one proxy allows; 0 turns a limit off.

    @ivar handshake_timeout: seconds for a connection to finish its HTTP
        request and WebSocket upgrade (token check included).
    @ivar idle_timeout: seconds without keyboard, mouse or clipboard input
        from the browser before the console is closed.
    @ivar max_session: seconds a console may stay open at all.
    @ivar keepalive_interval: seconds between WebSocket pings.
    @ivar keepalive_timeout: seconds to wait for the pong before dropping.
    @ivar max_connections: consoles open or opening at once, in total.
    @ivar max_connections_per_token: consoles open at once with one token.
    @ivar max_message_size: largest frame or message taken from a browser.
    @ivar max_pending_per_address: connections with no open console (page
        loads, token checks, handshakes in progress) per client address.
    @ivar descriptors: file descriptors the proxy's connections may hold
        (L{txvnc.proxy.capacity}); past them a new connection gets 503.
    @ivar end_at_token_expiry: a console also ends when the token that
        opened it expires (nova's C{[consoleauth] enforce_session_timeout}).
    """

    handshake_timeout: float = 30.0
    idle_timeout: float = 0.0
    max_session: float = 0.0
    keepalive_interval: float = 20.0
    keepalive_timeout: float = 10.0
    max_connections: int = 0
    max_connections_per_token: int = 0
    #: noVNC's biggest message is a clipboard paste; this bounds what one
    #: message can make the proxy hold.
    max_message_size: int = 4 * 1024 * 1024
    max_pending_per_address: int = 0
    descriptors: int = 0
    end_at_token_expiry: bool = False


def session_cap(limits: Limits, expires_at: str, now: float) -> float:
    """
    Seconds a console opened at C{now} may stay open (0: no cap): the
    C{max_session}, or less with C{end_at_token_expiry} when its token
    (C{expires_at}, the API's ISO 8601 UTC time) expires sooner.
    """
    cap = limits.max_session
    if not limits.end_at_token_expiry:
        return cap
    try:
        expiry = datetime.strptime(expires_at, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return cap
    left = max(expiry.replace(tzinfo=UTC).timestamp() - now, 0.001)
    return left if cap <= 0 else min(cap, left)


def is_user_input(message: bytes) -> bool:
    """
    Whether a message from noVNC carries a person's input. noVNC sends each
    RFB message in a WebSocket message of its own, so the first byte is the
    message type. (The RFB handshake's few client messages may be counted
    by chance; that only delays an idle timeout by one handshake.)
    """
    return bool(message) and message[0] in USER_INPUT_TYPES


@dataclass(frozen=True)
class Refusal:
    """
    Why a console may not open: a close code and its reason.
    """

    code: int
    reason: str
    outcome: str


class ConnectionCounter:
    """
    Counts consoles, in total and per token, against the limits. A slot is
    taken with L{enter} or L{enter_token} and given back with L{leave} or
    L{leave_token}, exactly once each.

    @ivar draining: set when the service is shutting down: no slot is given
        and new consoles are told so (1001).
    """

    def __init__(self, max_total: int = 0, max_per_token: int = 0) -> None:
        self.max_total = max_total
        self.max_per_token = max_per_token
        self.total = 0
        self.draining = False
        self._per_token: dict[str, int] = {}

    def enter(self) -> Refusal | None:
        if self.draining:
            return Refusal(
                closecodes.GOING_AWAY,
                closecodes.REASONS[closecodes.GOING_AWAY],
                "shutdown",
            )
        if self.max_total and self.total >= self.max_total:
            return Refusal(
                closecodes.TRY_AGAIN_LATER,
                closecodes.REASONS[closecodes.TRY_AGAIN_LATER],
                "too_many_connections",
            )
        self.total += 1
        return None

    def leave(self) -> None:
        self.total -= 1

    def enter_token(self, key: str) -> Refusal | None:
        count = self._per_token.get(key, 0)
        if self.max_per_token and count >= self.max_per_token:
            return Refusal(
                closecodes.TOO_MANY_FOR_TOKEN,
                closecodes.REASONS[closecodes.TOO_MANY_FOR_TOKEN],
                "too_many_for_token",
            )
        self._per_token[key] = count + 1
        return None

    def leave_token(self, key: str) -> None:
        count = self._per_token.get(key, 0) - 1
        if count > 0:
            self._per_token[key] = count
        else:
            self._per_token.pop(key, None)

    def for_token(self, key: str) -> int:
        return self._per_token.get(key, 0)


class Seat:
    """
    One console's places in a L{ConnectionCounter}: taken during admission
    (L{take}, then L{take_token} once the token is known) and given back
    together by L{release} when the console ends, however far it got.

    A token's place asked for after the release (the browser left while its
    token was being checked) is not taken: nothing would give it back.
    """

    def __init__(self, counter: ConnectionCounter) -> None:
        self.counter = counter
        self._counted = False
        self._token_key: str | None = None
        self._released = False

    def take(self) -> Refusal | None:
        refusal = self.counter.enter()
        if refusal is None:
            self._counted = True
        return refusal

    def take_token(self, key: str) -> Refusal | None:
        if self._released:
            return None
        refusal = self.counter.enter_token(key)
        if refusal is None:
            self._token_key = key
        return refusal

    def release(self) -> None:
        self._released = True
        if self._counted:
            self._counted = False
            self.counter.leave()
        if self._token_key is not None:
            self.counter.leave_token(self._token_key)
            self._token_key = None


class SessionTimers:
    """
    The idle timeout and the session cap of one console.

    Input is only recorded (a float assignment per key press); the idle
    deadline is checked when its timer fires and moved on if input came in
    meanwhile, so a busy console costs no timer churn.

    @param warn: called with (kind, seconds left) once before each deadline,
        kind being C{"idle"} or C{"session"}.
    @param expire: called with the close code when a deadline passes.
    """

    def __init__(
        self,
        clock: IReactorTime,
        idle_timeout: float,
        max_session: float,
        warn: Callable[[str, float], None],
        expire: Callable[[int], None],
        warning_lead: float = WARNING_LEAD,
    ) -> None:
        self._clock = clock
        self.idle_timeout = idle_timeout
        self.max_session = max_session
        self._warn = warn
        self._expire = expire
        self._lead = warning_lead
        self.last_input = 0.0
        self._idle_call: IDelayedCall | None = None
        self._session_calls: list[IDelayedCall] = []
        self._idle_warned = False

    def start(self) -> None:
        now = self._clock.seconds()
        self.last_input = now
        if self.idle_timeout > 0:
            self._schedule_idle(now)
        if self.max_session > 0:
            warn_at = self.max_session - self._lead
            if warn_at > 0:
                self._session_calls.append(
                    self._clock.callLater(
                        warn_at,
                        self._warn,
                        "session",
                        min(self._lead, self.max_session),
                    )
                )
            self._session_calls.append(
                self._clock.callLater(
                    self.max_session, self._fire, closecodes.MAX_SESSION
                )
            )

    def input(self) -> None:
        self.last_input = self._clock.seconds()
        self._idle_warned = False

    def stop(self) -> None:
        for call in [self._idle_call, *self._session_calls]:
            if call is not None and call.active():
                call.cancel()
        self._idle_call = None
        self._session_calls = []

    def _idle_warning_time(self) -> float:
        return max(self.idle_timeout - self._lead, 0.0)

    def _schedule_idle(self, now: float) -> None:
        deadline = self.last_input + self.idle_timeout
        warn_at = self.last_input + self._idle_warning_time()
        if not self._idle_warned and self._lead > 0 and warn_at < deadline:
            at = warn_at
        else:
            at = deadline
        self._idle_call = self._clock.callLater(max(at - now, 0.0), self._check_idle)

    def _check_idle(self) -> None:
        self._idle_call = None
        now = self._clock.seconds()
        deadline = self.last_input + self.idle_timeout
        if now >= deadline:
            self._fire(closecodes.IDLE_TIMEOUT)
            return
        warn_at = self.last_input + self._idle_warning_time()
        warn = not self._idle_warned and now >= warn_at
        self._idle_warned = self._idle_warned or warn
        # The deadline is set before the page is warned: a warning that
        # fails must not leave the console without its idle timeout.
        self._schedule_idle(now)
        if warn:
            self._warn("idle", deadline - now)

    def _fire(self, code: int) -> None:
        self.stop()
        self._expire(code)
