"""
C{POST /token-check}: may this token still open a console?

A browser cannot read why a WebSocket handshake was refused: a 403 for an
expired token, a 503 for a token API that is down and a proxy that cannot
be reached all reach the page as the same close code 1006. Before it
reconnects, or after its first handshake fails, the console page asks here
over plain same-origin HTTP, and stops for good only when the token is
known to be spent.

The answer is the one the handshake would get, minus the console: the same
admission (L{txvnc.proxy.admission}) decides, except that the token is
looked up with the token API's read-only check, which never uses up a
single-use token. The token travels in a JSON body, never in the URL, so no
access log (ours or a load balancer's) sees it; an unknown token counts
against the client in the brute-force guard exactly like a refused
handshake, so asking here is no faster a way to guess tokens than opening
consoles.

Answers (JSON, never cached):

    200 {"status": "valid"}
    400 {"error": ...}        the body is not a JSON object
    403 {"error": "The token is invalid or has expired"}
    403 {"error": "Origin not allowed"}
    403 {"error": "The console's target is not allowed"}
    405 {"error": "Use POST"} any other method
    415 {"error": ...}        not application/json
    429 {"error": "Too many failed console requests; try again later"}
    503 {"error": "Console authentication is unavailable"}
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from txvnc.core.forwarded import Network, request_client
from txvnc.proxy.admission import Admission, ConsoleRequest, Verdict
from txvnc.proxy.tokens import MAX_TOKEN_LENGTH

#: Where the console page asks.
PATH = b"token-check"
#: The largest body accepted: a token of MAX_TOKEN_LENGTH, JSON-escaped.
MAX_BODY = 2048


def token_from_body(body: bytes) -> str | None:
    """
    The token of a C{{"token": "..."}} body; L{None} when there is none or
    it is empty or too long (as the handshake treats it).

    @raise ValueError: the body is not a JSON object.
    """
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("the body is not a JSON object")
    token = parsed.get("token")
    if not isinstance(token, str):
        return None
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return token


class TokenCheckResource(Resource):
    """
    The page's question to the proxy, answered by the proxy's own
    L{Admission} (its token client, origin and target policies and
    brute-force guard).
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self, admission: Admission, trusted_proxies: tuple[Network, ...] = ()
    ) -> None:
        super().__init__()
        self._admission = admission
        self._trusted_proxies = trusted_proxies

    def render(self, request: Request) -> bytes | int:
        if request.method != b"POST":
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"POST")
            request.setHeader(b"Content-Type", b"application/json")
            return b'{"error": "Use POST"}\n'
        d = Deferred.fromCoroutine(self._answer(request))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        verdict = await self.decide(request)
        if request.channel is None:
            return  # the page went away while the API was asked
        request.setResponseCode(verdict.status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        request.write(json.dumps(verdict.body()).encode("utf-8") + b"\n")
        request.finish()

    def _failed(self, failure: Failure, request: Request) -> None:
        self._log.failure("unexpected error in a token check", failure)
        if request.channel is not None:
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"application/json")
            request.write(b'{"error": "Internal error"}\n')
            request.finish()

    async def decide(self, request: Request) -> Verdict:
        """
        What the handshake would answer for the token in C{request}'s body.
        """
        token: str | None = None
        unreadable: Verdict | None = None
        content_type = (_header(request, b"content-type") or "").split(";")[0]
        if content_type.strip().lower() != "application/json":
            unreadable = Verdict(415, "The body must be application/json")
        else:
            assert request.content is not None
            try:
                token = token_from_body(request.content.read(MAX_BODY + 1))
            except ValueError as e:
                unreadable = Verdict(400, f"Bad request: {e}")
        return await self._admission.decide(
            ConsoleRequest.token_check(
                client=request_client(request, self._trusted_proxies),
                origin=_header(request, b"origin"),
                host=_header(request, b"host"),
                token=token,
                unreadable=unreadable,
            )
        )


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)
