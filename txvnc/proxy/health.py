"""
C{GET /healthz} on the proxy's port: what a load balancer asks before it
sends a console to this process.

A process that answers is up and serving: its reactor turns, its listener
accepts and its site routes. The answer also says how many consoles it
holds, which an operator can compare across nodes.
"""

from __future__ import annotations

import json

from twisted.web.resource import Resource
from twisted.web.server import Request

from txvnc.proxy.relay import ConsoleProxyFactory


class HealthResource(Resource):
    """
    200 with C{{"status": "ok", "consoles": N}} for GET and HEAD.
    """

    isLeaf = True

    def __init__(self, factory: ConsoleProxyFactory) -> None:
        super().__init__()
        self._factory = factory

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        body = {"status": "ok", "consoles": len(self._factory.consoles)}
        return json.dumps(body).encode("utf-8") + b"\n"

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)
