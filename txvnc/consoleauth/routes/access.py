"""
The one check in front of every keyed route: L{requires}.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from txvnc.consoleauth.api import MAX_PARAMETER, TokenAPI, role_names
from txvnc.consoleauth.routes.answers import (
    Answer,
    StreamedBody,
    answer_body,
    query,
    refusal,
)
from txvnc.consoleauth.routes.app import app
from txvnc.consoleauth.routes.errors import failed

#: The role of a route any valid key may call.
ANY_KEY = None

#: A route's handler: the API, the request, the caller's roles, then the
#: path parameters by name.
Handler = Callable[..., Coroutine[Any, Any, Answer]]
#: What klein calls: a refusal at once, or the handler's answer later (as
#: bytes, or a resource that streams it).
Endpoint = Callable[..., bytes | Deferred[bytes | Resource]]


def requires(role: str | None) -> Callable[[Handler], Endpoint]:
    """
    Make C{handler} a route that needs a key with C{role} (L{ANY_KEY}: any
    valid key): 401 without one, 403 with the wrong one, 400 for a path
    parameter or C{instance_uuid} over L{MAX_PARAMETER} characters, then
    the handler's answer as JSON.
    """

    def decorate(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        def endpoint(
            api: TokenAPI, request: IRequest, **params: str
        ) -> bytes | Deferred[bytes | Resource]:
            roles = api.keys.roles(request.getHeader(b"authorization"))
            if roles is None:
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="txvnc"')
                return refusal(request, 401, "a valid API key is required")
            if role is not None and role not in roles:
                api.log.warn(
                    "refused {method} /{path}: the key's role ({roles}) is not {role}",
                    method=request.method.decode("ascii", "replace"),
                    path=_pattern(handler.__name__),
                    roles=role_names(roles),
                    role=role,
                )
                return refusal(
                    request, 403, f"this API key does not have the {role} role"
                )
            instance_uuid = query(request, "instance_uuid")
            if any(len(p) > MAX_PARAMETER for p in params.values()) or (
                instance_uuid is not None and len(instance_uuid) > MAX_PARAMETER
            ):
                return refusal(
                    request,
                    400,
                    f"a path or query value is over {MAX_PARAMETER} characters",
                )
            return _to_the_end(api, request, handler(api, request, roles, **params))

        return endpoint

    return decorate


def _pattern(endpoint: str) -> str:
    """
    The path of the route registered as C{endpoint}, parameters as C{*}
    (C{v1/tokens/*/use}).
    """
    rule = next(app.url_map.iter_rules(endpoint))
    return re.sub(r"<[^>]*>", "*", rule.rule).lstrip("/")


def _dropped(result: Answer) -> None:
    """
    An answer klein no longer wants (the client left): a streamed body's
    source (a recording's open file) is closed now, not when collected.
    """
    body = result[1]
    if isinstance(body, StreamedBody):
        body.body.stopProducing()


def _to_the_end(
    api: TokenAPI, request: IRequest, work: Coroutine[Any, Any, Answer]
) -> Deferred[bytes | Resource]:
    """
    Run a handler to its end, and give klein its answer as JSON.

    Klein cancels what a route returned when the client goes away; a
    handler cut short at an C{await} could leave a token removed and its
    revocation unwritten, or a mint unlogged. So klein gets a Deferred of
    its own: cancelling it drops the answer, and the handler goes on. A
    failure is logged either way.
    """
    answer: Deferred[bytes | Resource] = Deferred()

    def settle(result: Answer | Failure) -> None:
        body: bytes | Resource
        if isinstance(result, Failure):
            body = failed(api, request, result)
        elif answer.called:
            _dropped(result)
            return
        else:
            body = answer_body(request, *result)
        if not answer.called:
            answer.callback(body)

    Deferred.fromCoroutine(work).addBoth(settle)
    return answer
