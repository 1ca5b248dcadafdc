"""
How the token API reads a request and writes an answer: every answer is
JSON with C{Cache-Control: no-store}, every error C{{"error": "..."}}.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from txvnc.consoleauth.api import MAX_BODY
from txvnc.consoleauth.tokens import InvalidRequest
from txvnc.core.streamed import ThreadedBody, ThreadedResource

#: What a handler returns: the status and the JSON body (L{None}: none).
Answer = tuple[int, Any]


class StreamedBody:
    """
    An answer's body sent as it is read, not as JSON and never whole in
    memory (a recording's file): L{ThreadedBody}.
    """

    content_type = b"application/octet-stream"

    def __init__(self, body: ThreadedBody, length: int | None = None) -> None:
        self.body = body
        self.length = length


def answer_body(request: IRequest, status: int, body: Any) -> bytes | Resource:
    """
    Set the status and headers of a handler's answer; its body: as bytes
    (L{json_body}), or for a L{StreamedBody} the resource that sends it,
    which klein renders.
    """
    if not isinstance(body, StreamedBody):
        return json_body(request, status, body)
    request.setResponseCode(status)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Type", body.content_type)
    if body.length is not None:
        request.setHeader(b"Content-Length", b"%d" % (body.length,))
    return ThreadedResource(body.body)


def json_body(request: IRequest, status: int, body: Any) -> bytes:
    """
    Set the status and headers of an answer; its body, as bytes.
    """
    request.setResponseCode(status)
    request.setHeader(b"Cache-Control", b"no-store")
    if body is None:
        return b""
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8") + b"\n"


def refusal(request: IRequest, status: int, error: str) -> bytes:
    """
    An error answered before any handler runs (no such route, wrong method,
    no key, wrong role, a value too long). Like any body twisted.web gets
    from a resource at once, it goes out with its C{Content-Length}; a
    handler's answer is written when it is ready, chunked.
    """
    data = json_body(request, status, {"error": error})
    request.setHeader(b"Content-Length", b"%d" % (len(data),))
    return data


def query(request: IRequest, name: str) -> str | None:
    """
    The first value of query parameter C{name}, or L{None}.
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def read_json(request: IRequest, limit: int = MAX_BODY) -> Any:
    """
    The request's JSON body.

    @raise InvalidRequest: when it is too big or not JSON.
    """
    raw = request.content.read(limit + 1) if request.content else b""
    if len(raw) > limit:
        raise InvalidRequest(f"request body over {limit // 1024} KiB")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("request body is not valid JSON") from None
