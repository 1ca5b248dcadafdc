"""
The answers klein's error handlers give: a JSON 404 for a path no route
has, a JSON 405 naming the methods a path takes, and the one place a failed
request is logged and answered with 503 or 500.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from txvnc.consoleauth.api import TokenAPI
from txvnc.consoleauth.routes.answers import json_body, refusal
from txvnc.consoleauth.routes.app import app
from txvnc.consoleauth.store import ReadOnlyStore, StoreUnavailable


def failed(api: TokenAPI, request: IRequest, failure: Failure) -> bytes:
    """
    Log a request that failed and answer it: 503 when the store cannot be
    reached (an operator's problem, one line), 405 for a write to a
    read-only store (nova's tokens), 500 with the traceback in the
    log for anything else. Nothing of the failure goes into the answer.
    """
    if failure.check(StoreUnavailable):
        api.log.error(
            "token API request {method} failed: the store is unavailable: {why}",
            method=request.method,
            why=failure.getErrorMessage(),
        )
        return json_body(request, 503, {"error": "the token store is unavailable"})
    if failure.check(ReadOnlyStore):
        api.log.warn(
            "token API request {method} refused: {why}",
            method=request.method,
            why=failure.getErrorMessage(),
        )
        return json_body(request, 405, {"error": failure.getErrorMessage()})
    api.log.failure("token API request {method} failed", failure, method=request.method)
    return json_body(request, 500, {"error": "internal error"})


# klein tries these in order: the two routing errors first, since werkzeug's
# exceptions are Exceptions too.


@app.handle_errors(NotFound)
def not_found(self: TokenAPI, request: IRequest, failure: Failure) -> bytes:
    return refusal(request, 404, "no such resource")


@app.handle_errors(MethodNotAllowed)
def method_not_allowed(self: TokenAPI, request: IRequest, failure: Failure) -> bytes:
    allowed = failure.value.valid_methods or []
    request.setHeader(b"Allow", ", ".join(sorted(allowed)).encode())
    method = request.method.decode("ascii", "replace")
    return refusal(request, 405, f"method {method} not allowed")


@app.handle_errors(Exception)
def internal_error(self: TokenAPI, request: IRequest, failure: Failure) -> bytes:
    return failed(self, request, failure)
