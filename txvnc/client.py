"""
The one client of the token API, used by the proxy (to check tokens) and by
the CLI (to mint and revoke them).

It speaks through a treq L{HTTPClient} built on a persistent connection pool,
so a busy proxy checks tokens over a few warm connections instead of a TCP
handshake per console. Tests hand it a L{treq.testing.StubTreq} wrapping the
real resource instead.

A pool alone does not keep connections warm under load: it opens a new
connection for every request that finds none idle, and when more than
C{maxPersistentPerHost} come back it closes the extra ones, so 32 consoles
opening at once against a pool of 16 opened and closed a connection for
half of them, over and over (profiled: docs/performance.md, "Opening
consoles"). So the proxy's client also caps the requests in flight at the
pool's size (L{txvnc.httppool.API_CONNECTIONS}); the rest wait, inside
their deadline, for a connection that is already open.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.defer import CancelledError, DeferredSemaphore
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import (
    ResponseFailed,
)

DEFAULT_TIMEOUT = 5.0



class ConsoleAuthUnavailable(Exception):
    """
    The token API could not be asked: refused, unreachable, timed out or
    answered with a server error. Not the caller's fault; worth retrying.
    """


class ConsoleAuthError(Exception):
    """
    The token API refused the call (4xx), with the reason it gave.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ConnectInfo:
    """
    What a valid token grants, as the API reports it.
    """

    host: str
    port: int
    instance_uuid: str | None
    console_type: str
    expires_at: str
    #: The RFB security proxy's options (txvnc.rfb): absent means relay as is.
    unix_path: str | None = None
    security: str | None = None
    vnc_password: str | None = field(default=None, repr=False)
    view_only: bool | None = None
    clipboard: str | None = None
    shared: bool | None = None
    single_use: bool = False
    #: Record the console (docs/recording.md); its input; its clipboard.
    record: bool | None = None
    record_input: bool | None = None
    record_clipboard: bool | None = None
    #: The revocation feed's number when the token was taken (use only).
    revocation_cursor: int = 0

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ConnectInfo:
        return cls(
            host=str(body["host"]),
            port=int(body["port"]),
            instance_uuid=body.get("instance_uuid"),
            console_type=str(body.get("console_type", "novnc")),
            expires_at=str(body.get("expires_at", "")),
            unix_path=_optional(body, "unix_path", str),
            security=_optional(body, "security", str),
            vnc_password=_optional(body, "vnc_password", str),
            view_only=_optional(body, "view_only", bool),
            clipboard=_optional(body, "clipboard", str),
            shared=_optional(body, "shared", bool),
            single_use=bool(body.get("single_use", False)),
            record=_optional(body, "record", bool),
            record_input=_optional(body, "record_input", bool),
            record_clipboard=_optional(body, "record_clipboard", bool),
            revocation_cursor=int(body.get("revocation_cursor", 0)),
        )

    @property
    def target(self) -> str:
        """
        Where the console connects, for log lines.
        """
        return self.unix_path or f"{self.host}:{self.port}"


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} is not a {kind.__name__}")
    return value


class ConsoleAuthClient:
    """
    Calls the token API at C{base_url} with C{api_key}.

    @param api_key: the key, or a callable answering the current key (a
        proxy's key file is re-read on SIGHUP).
    @param http: a treq-like client: an L{HTTPClient}, or a
        L{treq.testing.StubTreq} in tests (they share no type, hence L{Any}).
    @param clock: where timeouts are scheduled.
    @param max_in_flight: requests sent at once; more wait (within their
        timeout) for one to finish. L{None}: no limit. The proxy sets it
        to its pool's size (L{txvnc.httppool.API_CONNECTIONS}).
    """

    def __init__(
        self,
        http: Any,
        base_url: str,
        api_key: str | Callable[[], str],
        clock: IReactorTime,
        timeout: float = DEFAULT_TIMEOUT,
        max_in_flight: int | None = None,
    ) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._clock = clock
        self.timeout = timeout
        self._slots = DeferredSemaphore(max_in_flight) if max_in_flight else None

    async def _call(
        self, method: str, path: str, json_body: Any = None, raw: bool = False
    ) -> tuple[int, Any]:
        # Never follow redirects: a token API that redirects is misconfigured
        # and the proxy's key must not be sent anywhere else.
        key = self._api_key if isinstance(self._api_key, str) else self._api_key()
        headers = {
            b"Authorization": [b"Bearer " + key.encode("utf-8")],
            b"Accept": [b"application/json"],
        }
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if json_body is not None:
            kwargs["json"] = json_body
        # One deadline for connecting, sending and reading the whole answer,
        # on our clock (treq's own timeout stops at the response headers).
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            pending.cancel()

        slots = self._slots
        held = False
        if slots is None:
            pending = self._http.request(method, self.base_url + path, **kwargs)
        else:
            pending = slots.acquire()
        deadline = self._clock.callLater(self.timeout, expire)
        try:
            if slots is not None:
                await pending
                held = True
                pending = self._http.request(method, self.base_url + path, **kwargs)
            response = await pending
            pending = treq.content(response)
            content = await pending
        except Exception as e:
            if expired:
                raise ConsoleAuthUnavailable(
                    f"token API did not answer within {self.timeout:g}s"
                ) from None
            if isinstance(
                e, (ConnectError, DNSLookupError, ResponseFailed, CancelledError)
            ):
                raise ConsoleAuthUnavailable(
                    f"token API unreachable: {_why(e)}"
                ) from None
            raise
        finally:
            if held:
                # After the body: the connection is back in the pool by now
                # (Twisted returns it before it finishes the response).
                slots.release()  # type: ignore[union-attr]
            if deadline.active():
                deadline.cancel()
        if raw and response.code == 200:
            return response.code, content
        body: Any = None
        if content:
            try:
                body = json.loads(content)
            except ValueError:
                body = None
        if response.code >= 500:
            raise ConsoleAuthUnavailable(f"token API answered {response.code}")
        return response.code, body

    async def call(self, method: str, path: str, raw: bool = False) -> tuple[int, Any]:
        """
        One call of the API for callers with routes and answers of their
        own (the replay page): the status and the JSON body (with C{raw},
        the bytes of a 200).
        """
        return await self._call(method, path, raw=raw)

    async def expect(
        self,
        method: str,
        path: str,
        ok: int = 200,
        *,
        body: Any = None,
        raw: bool = False,
        shape: type | None = None,
    ) -> Any:
        """
        The answer to a call that must get status C{ok}: its JSON body (with
        C{raw}, the bytes of a 200). Callers with routes of their own (the
        recording commands) use it as the operator's calls do.

        @param shape: the type the body must have (C{dict}), if any.
        @raise ConsoleAuthError: any other status or shape, with the API's
            own C{error} when it gave one.
        """
        status, answer = await self._call(method, path, body, raw)
        if status != ok or (shape is not None and not isinstance(answer, shape)):
            raise self._fail(status, answer)
        return answer

    @staticmethod
    def _fail(status: int, body: Any) -> ConsoleAuthError:
        message = "unexpected answer"
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message = body["error"]
        return ConsoleAuthError(status, message)

    async def check_token(self, token: str) -> ConnectInfo | None:
        """
        The connect info for C{token}, or L{None} when it is invalid or
        expired. Never uses up a single-use token.

        @raise ConsoleAuthUnavailable: the API could not give an answer.
        @raise ConsoleAuthError: the API refused the caller itself (bad key).
        """
        return await self._connect_info("GET", "/v1/tokens/" + quote(token, safe=""))

    async def use_token(self, token: str) -> ConnectInfo | None:
        """
        Like L{check_token}, for a console about to open: a single-use token
        is used up, and of racing callers only one gets its connect info.
        Needs the proxy role.
        """
        path = "/v1/tokens/" + quote(token, safe="") + "/use"
        return await self._connect_info("POST", path)

    async def _connect_info(self, method: str, path: str) -> ConnectInfo | None:
        status, body = await self._call(method, path)
        if status == 200 and isinstance(body, dict):
            try:
                return ConnectInfo.from_json(body)
            except (KeyError, TypeError, ValueError):
                pass
        elif status == 404:
            return None
        elif status in (401, 403):
            raise self._fail(status, body)
        # Anything else is the API (or something in front of it) misbehaving.
        raise ConsoleAuthUnavailable(f"token API sent an unexpected answer ({status})")

    async def revocations(self, after: int) -> tuple[int, list[dict[str, Any]]]:
        """
        The revocation feed after C{after}: the new cursor and the entries.
        """
        status, body = await self._call("GET", f"/v1/revocations?after={int(after)}")
        if status == 200 and isinstance(body, dict):
            try:
                return int(body["cursor"]), list(body["revocations"])
            except (KeyError, TypeError, ValueError):
                pass
        if status in (401, 403):
            raise self._fail(status, body)
        raise ConsoleAuthUnavailable(f"token API sent an unexpected answer ({status})")

    async def report_sessions(
        self, node: str, sessions: list[dict[str, Any]], ttl: int
    ) -> None:
        """
        Tell the API which consoles this proxy (C{node}) has open.
        """
        path = "/v1/proxies/" + quote(node, safe="") + "/sessions"
        await self.expect("PUT", path, 204, body={"ttl": ttl, "sessions": sessions})

    async def update_sessions(
        self,
        node: str,
        added: list[dict[str, Any]],
        removed: list[str],
        digest: str,
        ttl: int,
    ) -> bool:
        """
        Tell the API which consoles this proxy (C{node}) opened and closed
        since its last report, and the digest of all it has open now;
        L{False} when the API's copy does not add up and wants the whole
        list (L{report_sessions}).

        @raise ConsoleAuthError: 404 or 405 from an API that predates
            change reports, among others.
        """
        path = "/v1/proxies/" + quote(node, safe="") + "/sessions"
        body = {"ttl": ttl, "added": added, "removed": removed, "digest": digest}
        status, answer = await self._call("PATCH", path, body)
        if status == 204:
            return True
        if status == 409:
            return False
        raise self._fail(status, answer)

class OperatorClient(ConsoleAuthClient):
    """
    The calls an operator makes (the C{txvnc} command, admin role): minting,
    revoking, listing tokens and consoles (recordings: L{txvnc.clirecord}).
    A proxy needs none of them and uses L{ConsoleAuthClient}.
    """

    async def create_token(
        self,
        host: str | None,
        port: int | None,
        instance_uuid: str | None = None,
        ttl: int | None = None,
        console_type: str = "novnc",
        single_use: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """
        Mint a token; the API's JSON answer (token, access_url, expires_at, ...).

        @param options: the RFB options (C{unix_path}, C{vnc_password},
            C{security}, C{view_only}, C{clipboard}, C{shared}); L{None}
            values are left out. With C{unix_path}, pass C{host} and
            C{port} as L{None}.
        """
        request: dict[str, Any] = {
            "host": host,
            "port": port,
            "console_type": console_type,
        }
        request.update({k: v for k, v in options.items() if v is not None})
        if request.get("unix_path") is not None:
            del request["host"], request["port"]
        if instance_uuid is not None:
            request["instance_uuid"] = instance_uuid
        if ttl is not None:
            request["ttl"] = ttl
        if single_use:
            request["single_use"] = True
        answer: dict[str, Any] = await self.expect(
            "POST", "/v1/tokens", 201, body=request, shape=dict
        )
        return answer

    async def revoke_token(self, token: str) -> None:
        await self.expect("DELETE", "/v1/tokens/" + quote(token, safe=""), 204)

    async def revoke_instance(self, instance_uuid: str) -> None:
        path = "/v1/instances/" + quote(instance_uuid, safe="") + "/tokens"
        await self.expect("DELETE", path, 204)

    async def list_tokens(
        self, instance_uuid: str | None = None
    ) -> list[dict[str, Any]]:
        """
        The live tokens' metadata (never the tokens), of one instance or all.
        """
        path = "/v1/tokens" + _instance_query(instance_uuid)
        found = await self.expect("GET", path, shape=dict)
        return list(found.get("tokens", []))

    async def list_sessions(
        self, instance_uuid: str | None = None
    ) -> list[dict[str, Any]]:
        """
        The open consoles every proxy reports, of one instance or all.
        """
        path = "/v1/sessions" + _instance_query(instance_uuid)
        found = await self.expect("GET", path, shape=dict)
        return list(found.get("sessions", []))

    async def kill_session(self, session_id: str) -> None:
        """
        Close one open console, wherever it is.
        """
        path = "/v1/sessions/" + quote(session_id, safe="")
        await self.expect("DELETE", path, 204)

def _instance_query(instance_uuid: str | None) -> str:
    if not instance_uuid:
        return ""
    return "?instance_uuid=" + quote(instance_uuid, safe="")


def _why(error: Exception) -> str:
    if isinstance(error, ResponseFailed):
        reasons = [str(r.value) for r in error.reasons]
        return "; ".join(reasons) or "connection lost"
    return str(error) or type(error).__name__
