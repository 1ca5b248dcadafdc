"""
The two ways to ask for a console, the WebSocket handshake and the page's
C{POST /token-check}: whether the token is used or only checked, and the
words each writes in the log and the audit for the same admission steps
(L{txvnc.proxy.admission}). The texts and fields are the ones each path
always had; operators search for both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from twisted.logger import Logger

from txvnc.client import ConnectInfo, ConsoleAuthError


class Asked(Protocol):
    """What a path's log lines name of a request."""

    @property
    def client(self) -> str: ...

    @property
    def conn_id(self) -> str | None: ...

    @property
    def origin(self) -> str | None: ...


class Path(ABC):
    """
    One way to ask for a console: whether the token is used or only
    checked, and the words its log lines and audit reasons use. The lines
    of the two paths keep the texts and fields they always had.
    """

    uses_token = True
    audits_target = True
    audit_note = ""

    @abstractmethod
    def origin_refused(self, log: Logger, r: Asked) -> None:
        ...

    @abstractmethod
    def no_token(self, log: Logger, r: Asked) -> None:
        ...

    @abstractmethod
    def unavailable(self, log: Logger, r: Asked, ref: str, why: str) -> None:
        ...

    @abstractmethod
    def api_refused(
        self, log: Logger, r: Asked, error: ConsoleAuthError
    ) -> None:
        ...

    @abstractmethod
    def invalid(self, log: Logger, r: Asked, ref: str) -> None:
        ...

    @abstractmethod
    def target_refused(
        self, log: Logger, r: Asked, ref: str, info: ConnectInfo
    ) -> None:
        ...

    @abstractmethod
    def accepted(
        self, log: Logger, r: Asked, ref: str, info: ConnectInfo
    ) -> None:
        ...


class _Handshake(Path):
    """
    The WebSocket handshake: the token is used; lines name the console.
    """

    def origin_refused(self, log: Logger, r: Asked) -> None:
        log.warn(
            "[{conn_id}] {client}: refused: origin {origin!r} is not allowed",
            conn_id=r.conn_id,
            client=r.client,
            origin=r.origin,
        )

    def no_token(self, log: Logger, r: Asked) -> None:
        log.info(
            "[{conn_id}] {client}: refused: no token in the request",
            conn_id=r.conn_id,
            client=r.client,
        )

    def unavailable(self, log: Logger, r: Asked, ref: str, why: str) -> None:
        log.error(
            "[{conn_id}] {client}: cannot check token {token_ref}: {why}",
            conn_id=r.conn_id,
            client=r.client,
            token_ref=ref,
            why=why,
        )

    def api_refused(
        self, log: Logger, r: Asked, error: ConsoleAuthError
    ) -> None:
        log.critical(
            "[{conn_id}] {client}: the token API refused this proxy "
            "({status}: {why}); check its API key (--api-key-file)",
            conn_id=r.conn_id,
            client=r.client,
            status=error.status,
            why=error.message,
        )

    def invalid(self, log: Logger, r: Asked, ref: str) -> None:
        # The seed's "handler exception: The token '...' is invalid or has
        # expired", with a hash in place of the token.
        log.info(
            "[{conn_id}] {client}: handler exception: The token {token_ref} "
            "is invalid or has expired",
            conn_id=r.conn_id,
            client=r.client,
            token_ref=ref,
        )

    def target_refused(
        self, log: Logger, r: Asked, ref: str, info: ConnectInfo
    ) -> None:
        log.warn(
            "[{conn_id}] {client}: refused: token {token_ref} names "
            "{target}, outside this proxy's target policy",
            conn_id=r.conn_id,
            client=r.client,
            token_ref=ref,
            target=info.target,
        )

    def accepted(
        self, log: Logger, r: Asked, ref: str, info: ConnectInfo
    ) -> None:
        # One line where there were two ("token ... accepted" here, then
        # "connecting to: ..." as the console opened): a console costs two
        # lines, this and its closing summary (docs/performance.md).
        log.info(
            "[{conn_id}] {client}: connecting to: {target} (token {token_ref} "
            "accepted, instance {instance_uuid})",
            conn_id=r.conn_id,
            client=r.client,
            token_ref=ref,
            instance_uuid=info.instance_uuid,
            target=info.target,
        )


class _TokenCheck(Path):
    """
    The page's check: the token is only looked at; lines say "token check".
    """

    uses_token = False
    audits_target = False
    audit_note = " (token check)"

    def origin_refused(self, log: Logger, r: Asked) -> None:
        log.warn(
            "{client}: token check refused: origin {origin!r} is not allowed",
            client=r.client,
            origin=r.origin,
        )

    def no_token(self, log: Logger, r: Asked) -> None:
        log.info("{client}: token check: no token", client=r.client)

    def unavailable(self, log: Logger, r: Asked, ref: str, why: str) -> None:
        log.error(
            "{client}: token check: cannot check token {token_ref}: {why}",
            client=r.client,
            token_ref=ref,
            why=why,
        )

    def api_refused(
        self, log: Logger, r: Asked, error: ConsoleAuthError
    ) -> None:
        log.critical(
            "{client}: token check: the token API refused this proxy "
            "({status}: {why}); check its API key (--api-key-file)",
            client=r.client,
            status=error.status,
            why=error.message,
        )

    def invalid(self, log: Logger, r: Asked, ref: str) -> None:
        log.info(
            "{client}: token check: the token {token_ref} is invalid or "
            "has expired",
            client=r.client,
            token_ref=ref,
        )

    def target_refused(
        self, log: Logger, r: Asked, ref: str, info: ConnectInfo
    ) -> None:
        log.warn(
            "{client}: token check: token {token_ref} names {target}, "
            "outside this proxy's target policy",
            client=r.client,
            token_ref=ref,
            target=info.target,
        )

    def accepted(
        self, log: Logger, r: Asked, ref: str, info: ConnectInfo
    ) -> None:
        log.info(
            "{client}: token check: token {token_ref} is valid",
            client=r.client,
            token_ref=ref,
        )


#: The WebSocket handshake's path.
HANDSHAKE: Path = _Handshake()
#: The console page's C{POST /token-check} path.
TOKEN_CHECK: Path = _TokenCheck()

