"""
The token check and use without klein's routing.

A proxy asks C{GET /v1/tokens/{token}} or C{POST /v1/tokens/{token}/use}
for every console it opens, often of an API in its own process, and opening
consoles fast is a goal (issue 17). Klein's routing (binding a werkzeug map,
matching, and a chain of Deferreds around the handler) costs about 50 us a
request, close to the whole check without it (about 60 us), so these two
requests go to their handlers directly: the same endpoints klein calls, with
the same key check, answers and logs. Anything else, including these paths
with another method, goes through klein.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from txvnc.consoleauth.api import TokenAPI
from txvnc.consoleauth.routes.access import Endpoint
from txvnc.consoleauth.routes.tokens import check, use


def fast_route(request: Request) -> tuple[Endpoint, str] | None:
    """
    The endpoint and token of a check or a use, or L{None} for any other
    request. One trailing slash is tolerated, as by the routes.
    """
    segments: list[bytes] = request.postpath or []
    if segments and not segments[-1]:
        segments = segments[:-1]
    if len(segments) < 3 or segments[0] != b"v1" or segments[1] != b"tokens":
        return None
    token = segments[2]
    if not token:
        return None
    if len(segments) == 3 and request.method == b"GET":
        return check, token.decode("utf-8", "replace")
    if len(segments) == 4 and segments[3] == b"use" and request.method == b"POST":
        return use, token.decode("utf-8", "replace")
    return None


def serve(
    api: TokenAPI, request: Request, endpoint: Endpoint, token: str
) -> bytes | int:
    """
    Call C{endpoint} and answer as klein would: a refusal at once, a
    handler's answer when it is ready, nothing to a client that has gone.
    """
    answer = endpoint(api, request, token=token)
    if isinstance(answer, bytes):
        return answer
    if not answer.called:
        request.notifyFinish().addErrback(lambda _: answer.cancel())
    answer.addCallbacks(_write, _gone, callbackArgs=(request,))
    return NOT_DONE_YET


def _write(body: bytes, request: Request) -> None:
    request.write(body)
    request.finish()


def _gone(failure: Failure) -> None:
    # The handler's own failures are answered (500) in access; only the
    # client's leaving ends up here.
    failure.trap(CancelledError)
