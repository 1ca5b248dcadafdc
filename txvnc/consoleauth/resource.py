"""
The consoleauth HTTP token API as a L{twisted.web} resource.

Routes (all need C{Authorization: Bearer KEY}):

    POST   /v1/tokens                        mint a token
    GET    /v1/tokens/{token}                check a token, get its connect info
    DELETE /v1/tokens/{token}                revoke a token
    DELETE /v1/instances/{instance}/tokens   revoke every token of an instance

Every answer is JSON; every error is C{{"error": "..."}} with a status that
says what kind of mistake it was. Nothing a client sends can produce a
traceback in the response.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from txvnc.consoleauth.keys import bearer_matches
from txvnc.consoleauth.secretbox import (
    PLAIN,
    SecretBox,
    SecretError,
    reveal_password,
    seal_options,
)
from txvnc.consoleauth.store import ITokenStore
from txvnc.consoleauth.tokens import (
    InvalidRequest,
    iso8601,
    new_token,
    parse_token_request,
    token_hash,
    token_ref,
)
from txvnc.unixtargets import unix_path_allowed

MAX_BODY = 64 * 1024

Handler = Callable[[Request, list[str]], Awaitable[tuple[int, Any]]]


class _Route:
    """
    One path pattern and the handler for each method it accepts.
    """

    def __init__(self, pattern: tuple[str | None, ...], **handlers: Handler) -> None:
        self.pattern = pattern
        self.handlers = handlers

    def match(self, segments: list[str]) -> list[str] | None:
        """
        The C{None} slots of the pattern filled from C{segments}, or L{None}.
        """
        if len(segments) != len(self.pattern):
            return None
        params = []
        for want, got in zip(self.pattern, segments, strict=True):
            if want is None:
                if not got:
                    return None
                params.append(got)
            elif want != got:
                return None
        return params


class ConsoleAuthResource(Resource):
    """
    The token API. Holds its configuration (store, key, clock, base URL); the
    per-request work is in small coroutines, one per route.

    @ivar base_url: public base of the proxy, the prefix of access URLs.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        store: ITokenStore,
        api_key: str,
        clock: IReactorTime,
        base_url: str,
        secrets: SecretBox | None = None,
        allowed_unix_dirs: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.allowed_unix_dirs = allowed_unix_dirs
        self.store = store
        self._secrets = secrets
        self._api_key = api_key
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self._routes = [
            _Route(("v1", "tokens"), POST=self._create),
            _Route(("v1", "tokens", None), GET=self._check, DELETE=self._revoke),
            _Route(("v1", "instances", None, "tokens"), DELETE=self._revoke_instance),
        ]

    def render(self, request: Request) -> bytes | int:
        segments = [s.decode("utf-8", "replace") for s in request.postpath or []]
        if segments and segments[-1] == "" and len(segments) > 1:
            segments = segments[:-1]  # tolerate one trailing slash
        for route in self._routes:
            params = route.match(segments)
            if params is not None:
                break
        else:
            return self._write(request, 404, {"error": "no such resource"})

        method = request.method.decode("ascii", "replace")
        handler = route.handlers.get(method)
        if handler is None:
            request.setHeader(b"Allow", ", ".join(sorted(route.handlers)).encode())
            return self._write(request, 405, {"error": f"method {method} not allowed"})

        if not bearer_matches(request.getHeader(b"authorization"), self._api_key):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="txvnc"')
            return self._write(request, 401, {"error": "a valid API key is required"})

        d = Deferred.fromCoroutine(self._run(handler, request, params))
        d.addErrback(self._internal_error, request)
        return NOT_DONE_YET

    async def _run(self, handler: Handler, request: Request, params: list[str]) -> None:
        status, body = await handler(request, params)
        if not request._disconnected:
            request.write(self._write(request, status, body))
            request.finish()

    def _internal_error(self, failure: Failure, request: Request) -> None:
        self._log.failure(
            "token API request {method} failed", failure, method=request.method
        )
        if not request._disconnected and not request.finished:
            request.write(self._write(request, 500, {"error": "internal error"}))
            request.finish()

    def _write(self, request: Request, status: int, body: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Cache-Control", b"no-store")
        if body is None:
            return b""
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body).encode("utf-8") + b"\n"

    # Handlers: each returns (status, JSON body or None).

    async def _create(self, request: Request, params: list[str]) -> tuple[int, Any]:
        raw = request.content.read(MAX_BODY + 1) if request.content else b""
        if len(raw) > MAX_BODY:
            return 400, {"error": f"request body over {MAX_BODY // 1024} KiB"}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return 400, {"error": "request body is not valid JSON"}
        try:
            wanted = parse_token_request(body)
        except InvalidRequest as e:
            return 400, {"error": str(e)}

        unix_path = wanted.options.get("unix_path")
        if unix_path is not None and not unix_path_allowed(
            unix_path, self.allowed_unix_dirs
        ):
            return 403, {"error": "unix_path is not under an allowed directory"}

        token = new_token()
        record = wanted.to_record(token, self.clock.seconds())
        try:
            sealed = seal_options(record.options, self._secrets)
            record = replace(record, options=sealed)
        except SecretError as e:
            return 400, {"error": str(e)}
        await self.store.add(record)
        self._log.info(
            "minted token {token_ref} for instance {instance_uuid}: "
            "{console_type} console of {host}:{port}, expires {expires_at}",
            token_ref=token_ref(token),
            instance_uuid=record.instance_uuid,
            console_type=record.console_type,
            host=record.host,
            port=record.port,
            expires_at=iso8601(record.expires_at),
        )
        return 201, {
            "token": token,
            "access_url": f"{self.base_url}/vnc_auto.html?token={quote(token)}",
            "expires_at": iso8601(record.expires_at),
            "instance_uuid": record.instance_uuid,
            "console_type": record.console_type,
        }

    async def _check(self, request: Request, params: list[str]) -> tuple[int, Any]:
        (token,) = params
        record = await self.store.get(token_hash(token), self.clock.seconds())
        if record is None:
            return 404, {"error": "the token is invalid or has expired"}
        info = record.connect_info()
        if self._may_see_vnc_password(request):
            try:
                password = reveal_password(record.options, self._secrets)
            except SecretError as e:
                self._log.error(
                    "token {token_ref}: {why}", token_ref=token_ref(token), why=str(e)
                )
                return 500, {"error": "the token's VNC password cannot be decrypted"}
            if password is not None:
                info[PLAIN] = password
        return 200, info

    def _may_see_vnc_password(self, request: Request) -> bool:
        """
        Whether this caller gets the token's VNC password: only the proxy,
        which needs it to authenticate to the VNC server. With a single API
        key, every caller is the proxy; with roles, only the proxy role.
        """
        return True

    async def _revoke(self, request: Request, params: list[str]) -> tuple[int, Any]:
        (token,) = params
        existed = await self.store.remove(token_hash(token))
        self._log.info(
            "revoked token {token_ref} (known: {existed})",
            token_ref=token_ref(token),
            existed=existed,
        )
        return 204, None

    async def _revoke_instance(
        self, request: Request, params: list[str]
    ) -> tuple[int, Any]:
        (instance_uuid,) = params
        count = await self.store.remove_instance(instance_uuid)
        self._log.info(
            "revoked {count} token(s) of instance {instance_uuid}",
            count=count,
            instance_uuid=instance_uuid,
        )
        return 204, None
