"""
The consoleauth HTTP token API as the L{IResource} the assembly mounts.

Routes (each needs C{Authorization: Bearer KEY} with the role named; the
OpenAPI document, C{txvnc/consoleauth/openapi.yaml}, served at
C{GET /v1/openapi.yaml}, is the full reference):

    POST   /v1/tokens                        admin   mint a token
    GET    /v1/tokens[?instance_uuid=U]      admin   list live tokens (no secrets)
    GET    /v1/tokens/{token}                any     check a token
    DELETE /v1/tokens/{token}                admin   revoke a token
    POST   /v1/tokens/{token}/use            proxy   take a token for a console
    DELETE /v1/instances/{instance}/tokens   admin   revoke every token of an instance
    GET    /v1/sessions[?instance_uuid=U]    admin   list open consoles
    DELETE /v1/sessions/{id}                 admin   close one console
    GET    /v1/revocations?after=N           proxy   the revocation feed
    PUT    /v1/proxies/{node}/sessions       proxy   a proxy's open consoles
    GET    /v1/recordings[?instance_uuid=U&since=T&until=T]
                                             admin   list recordings (metadata)
    GET    /v1/recordings/{id}               admin   one recording's metadata
    GET    /v1/recordings/{id}/file          admin   download a recording
    DELETE /v1/recordings/{id}               admin   delete a recording
    POST   /v1/recordings/{id}/replay        admin   a short-lived replay URL
    GET    /v1/replays/{token}               proxy   which recording a replay URL opens
    GET    /v1/openapi.yaml                  none    this API's OpenAPI 3 document

Every answer is JSON; every error is C{{"error": "..."}} with a status that
says what kind of mistake it was. Nothing a client sends can produce a
traceback in the response.

The routes are klein handlers in L{txvnc.consoleauth.routes}; their
configuration is L{TokenAPI}. The token check and use, asked for every
console a proxy opens, skip klein's routing (L{routes.fastpath}).
"""

from __future__ import annotations

from typing import cast

from twisted.web.resource import Resource
from twisted.web.server import Request

from txvnc.consoleauth import routes
from txvnc.consoleauth.api import MAX_BODY, MAX_PARAMETER, MAX_REPORT_BODY, TokenAPI
from txvnc.consoleauth.routes.document import openapi_document
from txvnc.consoleauth.routes.fastpath import fast_route, serve

__all__ = [
    "MAX_BODY",
    "MAX_PARAMETER",
    "MAX_REPORT_BODY",
    "ConsoleAuthResource",
    "openapi_document",
]


class _Routes(Resource):
    """
    The resource half of L{ConsoleAuthResource}, initialised by
    L{TokenAPI.__init__} passing on to it (so the API's arguments are
    written down once, there): it checks the package holds its OpenAPI
    document and binds klein's routes to the instance.
    """

    isLeaf = True
    app = routes.app

    def __init__(self) -> None:
        super().__init__()
        openapi_document()  # a package without its document fails here, at start
        self._routes = self.app.resource()


class ConsoleAuthResource(TokenAPI, _Routes):
    """
    The token API: its configuration (L{TokenAPI}, whose constructor it
    takes) and its routes behind one resource. Klein binds the routes' app
    to each instance, so every route gets this object as its C{api}.
    """

    def render(self, request: Request) -> bytes | int:
        fast = fast_route(request)
        if fast is not None:
            return serve(self, request, *fast)
        # See txvnc.consoleauth.routes.app: each segment reaches werkzeug as
        # one, whatever it holds.
        request.postpath = routes.klein_path(request.postpath or [])
        # klein hands the Host header to werkzeug, which refuses a malformed
        # one (an HTML 400, or an exception answered with a 500), and falls
        # back to the listening address, which a unix socket does not have.
        # This API routes on the path alone and never reads Host.
        request.requestHeaders.setRawHeaders(b"host", [b"token-api"])
        # NOT_DONE_YET: klein answers through the request.
        return cast("bytes | int", self._routes.render(request))
