"""
Console tokens: what a token grants, how it is made, and how a request for
one is validated.

Everything here is pure (no I/O, no clock of its own) so the rules are tested
once, directly, and shared by the HTTP resource and the stores.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: 32 random bytes: 256 bits, twice what the issue asks for, URL-safe base64.
TOKEN_BYTES = 32

DEFAULT_TTL = 600
#: A console link is meant to be used now, not kept: one day at most.
MAX_TTL = 86400
CONSOLE_TYPES = ("novnc",)
MAX_HOST_LENGTH = 255
MAX_INSTANCE_UUID_LENGTH = 255


class InvalidRequest(ValueError):
    """
    A token request that cannot be honoured; the message is shown to the
    caller as is, so it says what is wrong and never echoes secrets.
    """


def new_token() -> str:
    """
    A fresh, unguessable, URL-safe token.
    """
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """
    The SHA-256 of a token, hex. Stores key on this, never on the token, so a
    copy of the database grants no console.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_ref(token: str) -> str:
    """
    A short, non-reversible name for a token, fit for log lines.
    """
    return token_hash(token)[:12]


def iso8601(timestamp: float) -> str:
    """
    A POSIX time as ISO 8601 UTC with a Z, the form every API answer uses.
    """
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TokenRecord:
    """
    What a token grants: a console of one type on one VNC target, until
    C{expires_at} (POSIX seconds).
    """

    token_hash: str
    host: str
    port: int
    instance_uuid: str | None
    console_type: str
    created_at: float
    expires_at: float

    def is_live(self, now: float) -> bool:
        return now < self.expires_at

    def connect_info(self) -> dict[str, Any]:
        """
        The answer to a token check: where to connect and for what.
        """
        return {
            "host": self.host,
            "port": self.port,
            "instance_uuid": self.instance_uuid,
            "console_type": self.console_type,
            "expires_at": iso8601(self.expires_at),
        }


@dataclass(frozen=True)
class TokenRequest:
    """
    A validated request to mint a token.
    """

    host: str
    port: int
    instance_uuid: str | None
    console_type: str
    ttl: int

    def to_record(self, token: str, now: float) -> TokenRecord:
        return TokenRecord(
            token_hash=token_hash(token),
            host=self.host,
            port=self.port,
            instance_uuid=self.instance_uuid,
            console_type=self.console_type,
            created_at=now,
            expires_at=now + self.ttl,
        )


def _is_int(value: object) -> bool:
    # bool is an int in Python; a JSON true is not a port.
    return isinstance(value, int) and not isinstance(value, bool)


def parse_token_request(body: object) -> TokenRequest:
    """
    Check a decoded JSON body against the token request schema.

    @raise InvalidRequest: naming the first thing that is wrong.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    known = {"host", "port", "instance_uuid", "console_type", "ttl"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidRequest(f"unknown field: {unknown[0]}")

    host = body.get("host")
    if host is None:
        raise InvalidRequest("missing host")
    if not isinstance(host, str) or not host:
        raise InvalidRequest("host must be a non-empty string")
    if len(host) > MAX_HOST_LENGTH or any(c.isspace() or c in "/?#@" for c in host):
        raise InvalidRequest("host must be a host name or an IP address")

    port = body.get("port")
    if port is None:
        raise InvalidRequest("missing port")
    if not _is_int(port) or not 1 <= port <= 65535:
        raise InvalidRequest("port must be an integer from 1 to 65535")

    instance_uuid = body.get("instance_uuid")
    if instance_uuid is not None and (
        not isinstance(instance_uuid, str)
        or not instance_uuid
        or len(instance_uuid) > MAX_INSTANCE_UUID_LENGTH
        or "/" in instance_uuid
    ):
        raise InvalidRequest(
            "instance_uuid must be a non-empty string of at most 255 characters"
            " without '/'"
        )

    console_type = body.get("console_type", "novnc")
    if console_type not in CONSOLE_TYPES:
        raise InvalidRequest("console_type must be one of: " + ", ".join(CONSOLE_TYPES))

    ttl = body.get("ttl", DEFAULT_TTL)
    if not _is_int(ttl) or ttl <= 0:
        raise InvalidRequest("ttl must be a positive integer (seconds)")
    if ttl > MAX_TTL:
        raise InvalidRequest(f"ttl must be at most {MAX_TTL} seconds")

    return TokenRequest(
        host=host,
        port=port,
        instance_uuid=instance_uuid,
        console_type=console_type,
        ttl=ttl,
    )
