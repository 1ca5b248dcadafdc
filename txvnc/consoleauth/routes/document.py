"""
The API's own OpenAPI 3 document, served without a key.

    GET    /v1/openapi.yaml
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from twisted.web.iweb import IRequest
from werkzeug.exceptions import NotFound

from txvnc.consoleauth.api import TokenAPI
from txvnc.consoleauth.routes.app import app


@cache
def openapi_document() -> bytes:
    """
    The OpenAPI 3 document shipped inside the package.
    """
    return resources.files("txvnc.consoleauth").joinpath("openapi.yaml").read_bytes()


# Any method reaches this rule: the document has always answered GET and
# HEAD, and every other method with the 404 of a path that is not there.
@app.route("/v1/openapi.yaml")
def openapi(api: TokenAPI, request: IRequest) -> bytes:
    if request.method not in (b"GET", b"HEAD"):
        raise NotFound()
    document = openapi_document()
    request.setHeader(b"Content-Type", b"application/yaml")
    request.setHeader(b"Cache-Control", b"no-cache")
    request.setHeader(b"Content-Length", b"%d" % (len(document),))
    return document
