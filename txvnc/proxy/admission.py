"""
May this console open? One answer for the WebSocket handshake and for the
console page's C{POST /token-check} (L{txvnc.proxy.tokencheck}): a
L{ConsoleRequest} in, a L{Verdict} out.

The steps, in order: the origin policy (L{txvnc.proxy.origin}); a request
that could not be read (the check's body); the brute-force guard
(L{txvnc.proxy.guard}: a client over its budget waits its paced turn); a
console slot (the handshake's L{Seat}); the token's presence; the token
API, which I{uses} the token for a handshake and only I{checks} it for the
page, so asking never spends a single-use token; the proxy's own target
policy (a unix target resolved to its real path); a slot for the token. A
missing or unknown token counts against the client in the guard on both
paths, so the check is no faster a way to guess tokens than opening
consoles.

The decisions themselves are the pure functions of L{txvnc.proxy.origin},
L{txvnc.proxy.tokens} and L{txvnc.proxy.guard}; this module only runs them
in order, asks the API, and writes the log lines and audit events. The two
paths name the same steps in their own words (both are in operators' log
searches), so each request carries its L{Path} (L{txvnc.proxy.paths}); what
the browser is told is the same sentence on both, from the constants below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from twisted.internet.task import deferLater
from twisted.logger import Logger

from txvnc.client import (
    ConnectInfo,
    ConsoleAuthClient,
    ConsoleAuthError,
    ConsoleAuthUnavailable,
)
from txvnc.core.audit import AuditLog
from txvnc.core.targets import TargetPolicy
from txvnc.core.tokens import token_hash, token_ref
from txvnc.core.unixpaths import real_unix_target
from txvnc.proxy import closecodes
from txvnc.proxy.events import ConsoleEvents
from txvnc.proxy.guard import AuthFailureGuard, address_of, client_key
from txvnc.proxy.limits import Refusal, Seat
from txvnc.proxy.origin import origin_allowed
from txvnc.proxy.paths import HANDSHAKE, TOKEN_CHECK, Path

#: What the browser is told when its token does not open a console; the
#: same words nova uses, and the same for unknown, expired and revoked.
INVALID_TOKEN = "The token is invalid or has expired"
#: What a client over its failed-check budget is told (HTTP 429).
TOO_MANY_FAILURES = "Too many failed console requests; try again later"
#: What the browser is told when the token names a target the policy refuses.
TARGET_NOT_ALLOWED = "The console's target is not allowed"
#: A page from a site that may not open consoles (HTTP 403).
ORIGIN_NOT_ALLOWED = "Origin not allowed"
#: The token API cannot answer (HTTP 503).
UNAVAILABLE = "Console authentication is unavailable"
#: Something unexpected went wrong on our side (HTTP 500).
INTERNAL_ERROR = "Internal error"


@dataclass(frozen=True)
class Verdict:
    """
    The answer to a L{ConsoleRequest}.

    @ivar status: C{200} when the console may open (or, with C{close}, open
        only to be told why it closes at once), else the HTTP status that
        refuses it.
    @ivar reason: the sentence for the page when refused.
    @ivar outcome: how the metrics count a console that ends here.
    @ivar info: what the token grants, when admitted.
    @ivar close: the close code and reason of a handshake that is accepted
        so that the page can read them, then closed (a limit, a shutdown).
    """

    status: int
    reason: str | None = None
    outcome: str | None = None
    info: ConnectInfo | None = None
    token_hash: str | None = None
    close: Refusal | None = None

    @property
    def refused(self) -> bool:
        return self.status != 200

    def body(self) -> dict[str, str]:
        """The verdict as the token check's JSON answer."""
        return {"status": "valid"} if self.reason is None else {"error": self.reason}


@dataclass(frozen=True)
class ConsoleRequest:
    """
    A request for a console, as admission needs it: plain values, taken
    from a WebSocket handshake (L{handshake}) or the page's check
    (L{token_check}).

    @ivar unreadable: the answer to a request whose token could not be read
        at all (the check's malformed body), given after the origin check.
    @ivar seat: the handshake's places in the connection counter; L{None}
        for the check, which opens nothing.
    """

    path: Path
    client: str
    origin: str | None
    host: str | None
    token: str | None
    conn_id: str | None = None
    seat: Seat | None = None
    unreadable: Verdict | None = None

    @classmethod
    def handshake(
        cls,
        conn_id: str,
        client: str,
        origin: str | None,
        host: str | None,
        token: str | None,
        seat: Seat,
    ) -> ConsoleRequest:
        return cls(HANDSHAKE, client, origin, host, token, conn_id, seat)

    @classmethod
    def token_check(
        cls,
        client: str,
        origin: str | None,
        host: str | None,
        token: str | None,
        unreadable: Verdict | None = None,
    ) -> ConsoleRequest:
        return cls(TOKEN_CHECK, client, origin, host, token, unreadable=unreadable)


class Admission:
    """
    Decides L{ConsoleRequest}s with the proxy's token client, policies,
    brute-force guard and audit log; built once by the proxy's factory and
    shared by the handshake and the token check.
    """

    _log = Logger()

    def __init__(
        self,
        auth: ConsoleAuthClient,
        guard: AuthFailureGuard,
        audit: AuditLog,
        events: ConsoleEvents,
        allowed_origins: tuple[str, ...] = (),
        target_policy: TargetPolicy | None = None,
        allowed_unix_dirs: tuple[str, ...] = (),
    ) -> None:
        self.auth = auth
        self.guard = guard
        self.audit = audit
        self.events = events
        self.allowed_origins = allowed_origins
        self.target_policy = (
            target_policy if target_policy is not None else TargetPolicy.parse([])
        )
        self.allowed_unix_dirs = allowed_unix_dirs

    def allowed_target(self, info: ConnectInfo) -> ConnectInfo | None:
        """
        C{info} as the console should connect, when this proxy's own policy
        (C{--allowed-target}, C{--allowed-unix-dir}) lets it reach that
        target; else L{None}. A unix target is resolved here (a local stat)
        and its real path is what the console connects to
        (L{txvnc.core.unixpaths}).
        """
        if info.unix_path is not None:
            real = real_unix_target(info.unix_path, self.allowed_unix_dirs)
            return None if real is None else replace(info, unix_path=real)
        return info if self.target_policy.allows(info.host, info.port) else None

    async def decide(self, request: ConsoleRequest) -> Verdict:
        """
        Run the steps in order; the first that refuses answers.
        """
        path = request.path
        log = self._log
        if not origin_allowed(request.origin, request.host, self.allowed_origins):
            path.origin_refused(log, request)
            return Verdict(403, ORIGIN_NOT_ALLOWED, "bad_origin")
        if request.unreadable is not None:
            return request.unreadable

        address = address_of(request.client)
        # Over its failure budget, a client still has its token checked (a
        # valid one opens: its neighbours behind the same address are not
        # locked out), but one check at a time at the guard's pace, and a
        # failure is answered 429 (txvnc.proxy.guard).
        paced = self.guard.blocked(address)
        if paced:
            wait = self.guard.next_check(address)
            if wait is None:
                return Verdict(429, TOO_MANY_FAILURES, "too_many_failures")
            if wait > 0:
                await deferLater(self.guard.clock, wait)

        seat = request.seat
        if seat is not None:
            # Over a limit, or shutting down: the upgrade is accepted so
            # that the page gets a close code and a reason it can show (no
            # token check, no VNC connection).
            refusal = seat.take()
            if refusal is not None:
                return self._no_room(request, refusal)

        token = request.token
        if token is None:
            path.no_token(log, request)
            self._failed(request, address, None, "no token")
            if paced:
                return Verdict(429, TOO_MANY_FAILURES, "too_many_failures")
            return Verdict(403, INVALID_TOKEN, "no_token")

        ref = token_ref(token)
        try:
            with self.events.token_check() as check:
                if path.uses_token:
                    info = await self.auth.use_token(token)
                else:
                    info = await self.auth.check_token(token)
                check.result = "invalid" if info is None else "valid"
        except ConsoleAuthUnavailable as e:
            path.unavailable(log, request, ref, str(e))
            return Verdict(503, UNAVAILABLE, "auth_unavailable")
        except ConsoleAuthError as e:
            # The API refused the proxy itself: a configuration error (wrong
            # key), not the user's fault, and not worth a traceback.
            path.api_refused(log, request, e)
            return Verdict(503, UNAVAILABLE, "auth_refused")
        hashed = token_hash(token)
        if info is None:
            path.invalid(log, request, ref)
            self._failed(request, address, hashed, "invalid token")
            if paced:
                return Verdict(429, TOO_MANY_FAILURES, "too_many_failures")
            return Verdict(403, INVALID_TOKEN, "bad_token")

        allowed = self.allowed_target(info)
        if allowed is None:
            # The API should never have minted it; the proxy's own policy
            # has the last word before any packet goes to the target.
            path.target_refused(log, request, ref, info)
            if path.audits_target:
                self.audit.record(
                    "console.refused",
                    actor="proxy",
                    client=request.client,
                    instance_uuid=info.instance_uuid,
                    target=info.target,
                    token_hash=hashed,
                    reason="target not allowed",
                )
            return Verdict(403, TARGET_NOT_ALLOWED, "target_not_allowed")
        info = allowed

        if seat is not None:
            refusal = seat.take_token(hashed)
            if refusal is not None:
                log.warn(
                    "[{conn_id}] {client}: refused: token {token_ref} already has "
                    "{count} console(s) open (--max-connections-per-token)",
                    conn_id=request.conn_id,
                    client=request.client,
                    token_ref=ref,
                    count=seat.counter.for_token(hashed),
                )
                return self._no_room(request, refusal)
        path.accepted(log, request, ref, info)
        return Verdict(200, info=info, token_hash=hashed)

    def _no_room(self, request: ConsoleRequest, refusal: Refusal) -> Verdict:
        if refusal.code == closecodes.TRY_AGAIN_LATER:
            assert request.seat is not None
            self._log.warn(
                "[{conn_id}] {client}: refused: {open} consoles open or opening "
                "(--max-connections)",
                conn_id=request.conn_id,
                client=request.client,
                open=request.seat.counter.total,
            )
        return Verdict(200, outcome=refusal.outcome, close=refusal)

    def _failed(
        self, request: ConsoleRequest, address: str, hashed: str | None, why: str
    ) -> None:
        """
        No token, or one the API does not know: audit it and count it
        against C{address} in the brute-force guard.
        """
        self.audit.record(
            "console.refused",
            actor="proxy",
            client=request.client,
            token_hash=hashed,
            reason=why + request.path.audit_note,
        )
        if self.guard.failed(address):
            self._log.warn(
                "{address}: over {limit} failed console requests in a minute; "
                "checking its tokens one per {pace:g}s and answering its "
                "failures with 429 until it has failed none for {cooldown:g}s",
                address=client_key(address),
                limit=self.guard.max_failures,
                pace=self.guard.pace,
                cooldown=self.guard.cooldown,
            )
