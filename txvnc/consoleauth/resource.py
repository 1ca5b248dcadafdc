"""
The consoleauth HTTP token API as a L{twisted.web} resource.

Routes (each needs C{Authorization: Bearer KEY} with the role named; the
OpenAPI document at C{docs/api/openapi.yaml} is the full reference):

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
    GET    /v1/openapi.yaml                  none    this API's OpenAPI 3 document

Every answer is JSON; every error is C{{"error": "..."}} with a status that
says what kind of mistake it was. Nothing a client sends can produce a
traceback in the response.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib import resources
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from txvnc.consoleauth.keys import ADMIN, PROXY, ROLES, KeyRing
from txvnc.consoleauth.secretbox import (
    PLAIN,
    SecretBox,
    SecretError,
    reveal_password,
    seal_options,
)
from txvnc.consoleauth.sessions import SessionRecord
from txvnc.consoleauth.store import ITokenStore, StoreUnavailable
from txvnc.consoleauth.tokens import (
    MAX_TTL,
    InvalidRequest,
    TokenRecord,
    new_token,
    parse_token_request,
)
from txvnc.core.audit import AuditLog
from txvnc.core.forwarded import Network, request_client
from txvnc.core.targets import TargetPolicy, unix_path_allowed
from txvnc.core.tokens import iso8601, token_hash, token_ref

MAX_BODY = 64 * 1024
#: Longest path parameter (a token, instance, console or node name) or
#: instance_uuid query value accepted; tokens are 43 characters.
MAX_PARAMETER = 256
#: A proxy's console report: room for about ten thousand consoles.
MAX_REPORT_BODY = 4 * 1024 * 1024
#: How long a proxy's report stays listed unless it reports again.
DEFAULT_REPORT_TTL = 30
MAX_REPORT_TTL = 3600

Handler = Callable[[Request, list[str], frozenset[str]], Awaitable[tuple[int, Any]]]


def openapi_document() -> bytes:
    """
    The OpenAPI 3 document shipped inside the package.
    """
    return resources.files("txvnc.consoleauth").joinpath("openapi.yaml").read_bytes()


class _Route:
    """
    One path pattern and, for each method it accepts, the handler and the
    role that may call it (L{None}: any valid key).
    """

    def __init__(
        self, pattern: tuple[str | None, ...], **handlers: tuple[Handler, str | None]
    ) -> None:
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


def _query(request: Request, name: str) -> str | None:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _role_name(roles: frozenset[str]) -> str:
    return ",".join(r for r in ROLES if r in roles)


class ConsoleAuthResource(Resource):
    """
    The token API. Holds its configuration (store, keys, clock, base URL,
    target policy, audit log); the per-request work is in small coroutines,
    one per route.

    @ivar base_url: public base of the proxy, the prefix of access URLs.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        store: ITokenStore,
        keys: KeyRing | str,
        clock: IReactorTime,
        base_url: str,
        secrets: SecretBox | None = None,
        allowed_unix_dirs: tuple[str, ...] = (),
        policy: TargetPolicy | None = None,
        max_ttl: int = MAX_TTL,
        audit: AuditLog | None = None,
    ) -> None:
        super().__init__()
        self.allowed_unix_dirs = allowed_unix_dirs
        self.store = store
        self._secrets = secrets
        self.keys = KeyRing.single(keys) if isinstance(keys, str) else keys
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self.policy = policy if policy is not None else TargetPolicy.parse([])
        self.max_ttl = max_ttl
        self.audit = audit if audit is not None else AuditLog(clock)
        #: Networks whose X-Forwarded-For names the client in audit lines
        #: (--trusted-proxy): behind a balancer the peer is the balancer.
        self.trusted_proxies: tuple[Network, ...] = ()
        self._openapi = openapi_document()
        self._routes = [
            _Route(
                ("v1", "tokens"),
                POST=(self._create, ADMIN),
                GET=(self._list, ADMIN),
            ),
            _Route(
                ("v1", "tokens", None),
                GET=(self._check, None),
                DELETE=(self._revoke, ADMIN),
            ),
            _Route(("v1", "tokens", None, "use"), POST=(self._use, PROXY)),
            _Route(
                ("v1", "instances", None, "tokens"),
                DELETE=(self._revoke_instance, ADMIN),
            ),
            _Route(("v1", "sessions"), GET=(self._sessions, ADMIN)),
            _Route(("v1", "sessions", None), DELETE=(self._kill_session, ADMIN)),
            _Route(("v1", "revocations"), GET=(self._revocations, PROXY)),
            _Route(
                ("v1", "proxies", None, "sessions"),
                PUT=(self._report_sessions, PROXY),
            ),
        ]

    def _audit(
        self, request: Request, roles: frozenset[str], event: str, **fields: Any
    ) -> None:
        """One audit line, naming the caller by role and address."""
        self.audit.record(
            event,
            actor=_role_name(roles),
            client=request_client(request, self.trusted_proxies),
            **fields,
        )

    def render(self, request: Request) -> bytes | int:
        segments = [s.decode("utf-8", "replace") for s in request.postpath or []]
        if segments and segments[-1] == "" and len(segments) > 1:
            segments = segments[:-1]  # tolerate one trailing slash
        if segments == ["v1", "openapi.yaml"] and request.method in (b"GET", b"HEAD"):
            request.setHeader(b"Content-Type", b"application/yaml")
            request.setHeader(b"Cache-Control", b"no-cache")
            return self._openapi
        for route in self._routes:
            params = route.match(segments)
            if params is not None:
                break
        else:
            return self._write(request, 404, {"error": "no such resource"})

        method = request.method.decode("ascii", "replace")
        entry = route.handlers.get(method)
        if entry is None:
            request.setHeader(b"Allow", ", ".join(sorted(route.handlers)).encode())
            return self._write(request, 405, {"error": f"method {method} not allowed"})
        handler, role = entry

        roles = self.keys.roles(request.getHeader(b"authorization"))
        if roles is None:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="txvnc"')
            return self._write(request, 401, {"error": "a valid API key is required"})
        if role is not None and role not in roles:
            self._log.warn(
                "refused {method} /{path}: the key's role ({roles}) is not {role}",
                method=method,
                path="/".join(p or "*" for p in route.pattern),
                roles=_role_name(roles),
                role=role,
            )
            return self._write(
                request, 403, {"error": f"this API key does not have the {role} role"}
            )

        too_long = [p for p in params if len(p) > MAX_PARAMETER]
        query = _query(request, "instance_uuid")
        if too_long or (query is not None and len(query) > MAX_PARAMETER):
            return self._write(
                request,
                400,
                {"error": f"a path or query value is over {MAX_PARAMETER} characters"},
            )

        d = Deferred.fromCoroutine(self._run(handler, request, params, roles))
        d.addErrback(self._internal_error, request)
        return NOT_DONE_YET

    async def _run(
        self,
        handler: Handler,
        request: Request,
        params: list[str],
        roles: frozenset[str],
    ) -> None:
        status, body = await handler(request, params, roles)
        if not request._disconnected:
            request.write(self._write(request, status, body))
            request.finish()

    def _internal_error(self, failure: Failure, request: Request) -> None:
        if failure.check(StoreUnavailable):
            self._log.error(
                "token API request {method} failed: the store is unavailable: {why}",
                method=request.method,
                why=failure.getErrorMessage(),
            )
            status, body = 503, {"error": "the token store is unavailable"}
        else:
            self._log.failure(
                "token API request {method} failed", failure, method=request.method
            )
            status, body = 500, {"error": "internal error"}
        if not request._disconnected and not request.finished:
            request.write(self._write(request, status, body))
            request.finish()

    def _write(self, request: Request, status: int, body: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Cache-Control", b"no-store")
        if body is None:
            return b""
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body).encode("utf-8") + b"\n"

    def _read_json(self, request: Request, limit: int = MAX_BODY) -> Any:
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

    # Handlers: each returns (status, JSON body or None).

    async def _create(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        try:
            wanted = parse_token_request(self._read_json(request), self.max_ttl)
        except InvalidRequest as e:
            return 400, {"error": str(e)}
        unix_path = wanted.options.get("unix_path")
        if unix_path is None and not self.policy.allows(wanted.host, wanted.port):
            self._log.warn(
                "refused to mint a token for {host}:{port} (instance "
                "{instance_uuid}): outside the target policy",
                host=wanted.host,
                port=wanted.port,
                instance_uuid=wanted.instance_uuid,
            )
            self._audit(
                request,
                roles,
                "token.refused",
                instance_uuid=wanted.instance_uuid,
                target=f"{wanted.host}:{wanted.port}",
                reason="target not allowed",
            )
            return 403, {
                "error": f"target {wanted.host}:{wanted.port} is not allowed by the "
                "target policy"
            }

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
            "{console_type} console of {host}:{port}, expires {expires_at}"
            "{single_use}",
            token_ref=token_ref(token),
            instance_uuid=record.instance_uuid,
            console_type=record.console_type,
            host=record.host,
            port=record.port,
            expires_at=iso8601(record.expires_at),
            single_use=", single use" if record.single_use else "",
        )
        self._audit(
            request,
            roles,
            "token.minted",
            instance_uuid=record.instance_uuid,
            target=f"{record.host}:{record.port}",
            token_hash=record.token_hash,
            expires_at=iso8601(record.expires_at),
            single_use=record.single_use,
        )
        return 201, {
            "token": token,
            "access_url": f"{self.base_url}/vnc_auto.html?token={quote(token)}",
            "expires_at": iso8601(record.expires_at),
            "instance_uuid": record.instance_uuid,
            "console_type": record.console_type,
            "single_use": record.single_use,
        }

    async def _list(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        instance_uuid = _query(request, "instance_uuid")
        records = await self.store.list_tokens(
            instance_uuid or None, self.clock.seconds()
        )
        return 200, {"tokens": [r.metadata() for r in records]}

    def _check_failed(
        self, request: Request, token: str, roles: frozenset[str], event: str
    ) -> tuple[int, Any]:
        self._audit(
            request,
            roles,
            event,
            token_hash=token_hash(token),
        )
        return 404, {"error": "the token is invalid or has expired"}

    async def _check(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        (token,) = params
        record = await self.store.get(token_hash(token), self.clock.seconds())
        if record is None:
            return self._check_failed(request, token, roles, "token.check_failed")
        return self._connect_info(token, record, roles)

    def _connect_info(
        self, token: str, record: TokenRecord, roles: frozenset[str]
    ) -> tuple[int, Any]:
        """
        What a token grants, with its VNC password for the proxy role only
        (the proxy needs it to authenticate to the VNC server).
        """
        info = record.connect_info()
        if PROXY in roles:
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

    async def _use(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        (token,) = params
        # Read before the token is taken: every revocation the console must
        # obey has a larger number (docs/revocation.md).
        cursor = await self.store.revocation_cursor()
        record: TokenRecord | None = await self.store.use(
            token_hash(token), self.clock.seconds()
        )
        if record is None:
            return self._check_failed(request, token, roles, "token.use_failed")
        if record.single_use:
            self._audit(
                request,
                roles,
                "token.used",
                instance_uuid=record.instance_uuid,
                target=f"{record.host}:{record.port}",
                token_hash=record.token_hash,
            )
        status, info = self._connect_info(token, record, roles)
        if status == 200:
            info["revocation_cursor"] = cursor
        return status, info

    async def _revoke(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        (token,) = params
        hashed = token_hash(token)
        existed = await self.store.remove(hashed)
        # Even an unknown (or expired) token goes into the feed: a console
        # opened with it may still be open.
        await self.store.add_revocation("token", hashed, self.clock.seconds())
        self._log.info(
            "revoked token {token_ref} (known: {existed})",
            token_ref=token_ref(token),
            existed=existed,
        )
        self._audit(
            request,
            roles,
            "token.revoked",
            token_hash=hashed,
            known=existed,
        )
        return 204, None

    async def _revoke_instance(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        (instance_uuid,) = params
        count = await self.store.remove_instance(instance_uuid)
        await self.store.add_revocation("instance", instance_uuid, self.clock.seconds())
        self._log.info(
            "revoked {count} token(s) of instance {instance_uuid}",
            count=count,
            instance_uuid=instance_uuid,
        )
        self._audit(
            request,
            roles,
            "instance.revoked",
            instance_uuid=instance_uuid,
            tokens=count,
        )
        return 204, None

    async def _sessions(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        instance_uuid = _query(request, "instance_uuid")
        found = await self.store.sessions(self.clock.seconds())
        if instance_uuid:
            found = [s for s in found if s.instance_uuid == instance_uuid]
        return 200, {"sessions": [s.public() for s in found]}

    async def _kill_session(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        (session_id,) = params
        found = [
            s
            for s in await self.store.sessions(self.clock.seconds())
            if s.id == session_id
        ]
        if not found:
            return 404, {"error": "no such console session"}
        await self.store.add_revocation("session", session_id, self.clock.seconds())
        session = found[0]
        self._log.info(
            "closing console {session_id} of instance {instance_uuid} on {node}",
            session_id=session_id,
            instance_uuid=session.instance_uuid,
            node=session.node,
        )
        self._audit(
            request,
            roles,
            "session.killed",
            session_id=session_id,
            instance_uuid=session.instance_uuid,
            target=f"{session.host}:{session.port}",
            token_hash=session.token_hash,
            proxy=session.node,
        )
        return 204, None

    async def _revocations(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        after_text = _query(request, "after")
        if after_text is None:
            after_text = "0"
        if not after_text.isdigit() or len(after_text) > 18:
            return 400, {"error": "after must be a non-negative integer"}
        # A cursor above "cursor" in the answer means the feed restarted
        # (a memory store's process did); the caller starts again from 0.
        latest, entries = await self.store.revocations(int(after_text))
        return 200, {"cursor": latest, "revocations": [e.to_json() for e in entries]}

    async def _report_sessions(
        self, request: Request, params: list[str], roles: frozenset[str]
    ) -> tuple[int, Any]:
        (node,) = params
        try:
            body = self._read_json(request, MAX_REPORT_BODY)
            if not isinstance(body, dict) or not isinstance(body.get("sessions"), list):
                raise InvalidRequest('the body must be {"sessions": [...]}')
            extra = sorted(set(body) - {"ttl", "sessions"})
            if extra:
                raise InvalidRequest(f"unknown field: {extra[0][:40]}")
            ttl = body.get("ttl", DEFAULT_REPORT_TTL)
            if (
                not isinstance(ttl, int)
                or isinstance(ttl, bool)
                or not (1 <= ttl <= MAX_REPORT_TTL)
            ):
                raise InvalidRequest(
                    f"ttl must be an integer from 1 to {MAX_REPORT_TTL}"
                )
            sessions = []
            for item in body["sessions"]:
                if not isinstance(item, dict):
                    raise InvalidRequest("each session must be an object")
                try:
                    sessions.append(SessionRecord.from_dict({**item, "node": node}))
                except ValueError as e:
                    raise InvalidRequest(str(e)) from None
        except InvalidRequest as e:
            return 400, {"error": str(e)}
        await self.store.put_sessions(node, sessions, self.clock.seconds(), ttl)
        return 204, None
