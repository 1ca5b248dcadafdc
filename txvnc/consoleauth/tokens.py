"""
Console tokens: what a token grants, how it is made, and how a request for
one is validated.

Everything here is pure (no I/O, no clock of its own) so the rules are tested
once, directly, and shared by the HTTP resource and the stores.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from txvnc.core.tokens import iso8601, token_hash

#: 32 random bytes: 256 bits, twice what the issue asks for, URL-safe base64.
TOKEN_BYTES = 32

DEFAULT_TTL = 600
#: A console link is meant to be used now, not kept: one day at most.
MAX_TTL = 86400
CONSOLE_TYPES = ("novnc",)
MAX_HOST_LENGTH = 255
MAX_INSTANCE_UUID_LENGTH = 255
#: sun_path holds 108 bytes with the terminating NUL.
MAX_UNIX_PATH_LENGTH = 107
#: RFB's VNC Authentication uses 8 bytes; longer passwords are refused rather
#: than silently cut.
MAX_VNC_PASSWORD_LENGTH = 8
SECURITY_MODES = ("none", "vnc", "vencrypt")
CLIPBOARD_MODES = ("both", "to_vm", "from_vm", "none")


class InvalidRequest(ValueError):
    """
    A token request that cannot be honoured; the message is shown to the
    caller as is, so it says what is wrong and never echoes secrets.
    """


def new_token() -> str:
    """
    A fresh, unguessable, URL-safe token that never starts with "-": such
    a token on a command line (C{txvnc console revoke TOKEN}) reads as an
    option. Drawing again when it would costs 0.02 of its 256 bits.
    """
    while True:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if not token.startswith("-"):
            return token


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
    #: The RFB security proxy's options (L{OPTION_FIELDS}), JSON-ready; the
    #: password only ever sealed (C{vnc_password_sealed}).
    options: dict[str, Any] = field(default_factory=dict)
    #: Gone after the first console opened with it (L{ITokenStore.use}).
    single_use: bool = False

    def is_live(self, now: float) -> bool:
        return now < self.expires_at

    def to_json(self) -> str:
        """
        The record as the JSON text stores keep, so a new field needs no
        schema change in any store.
        """
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TokenRecord:
        """
        The record L{to_json} wrote; fields it does not know are dropped.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in fields})

    def metadata(self) -> dict[str, Any]:
        """
        What an admin listing shows of a token: everything but the secret
        (the hash names it for the audit log; it opens nothing) and any
        VNC password.
        """
        return {
            "token_hash": self.token_hash,
            "instance_uuid": self.instance_uuid,
            "host": self.host,
            "port": self.port,
            "console_type": self.console_type,
            "single_use": self.single_use,
            "created_at": iso8601(self.created_at),
            "expires_at": iso8601(self.expires_at),
            **{k: v for k, v in self.options.items() if not k.startswith("vnc_")},
        }

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
            "single_use": self.single_use,
            # Never the sealed password: the token API adds the password
            # itself, and only for the proxy (see resource.py).
            **{k: v for k, v in self.options.items() if not k.startswith("vnc_")},
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
    options: dict[str, Any] = field(default_factory=dict)
    single_use: bool = False

    def to_record(self, token: str, now: float) -> TokenRecord:
        return TokenRecord(
            token_hash=token_hash(token),
            host=self.host,
            port=self.port,
            instance_uuid=self.instance_uuid,
            console_type=self.console_type,
            created_at=now,
            expires_at=now + self.ttl,
            options=dict(self.options),
            single_use=self.single_use,
        )


def _is_int(value: object) -> bool:
    # bool is an int in Python; a JSON true is not a port.
    return isinstance(value, int) and not isinstance(value, bool)


#: Unicode categories an instance name may not hold: control and format
#: characters (a newline that forges a log line, an ESC that repaints a
#: terminal, a right-to-left override), surrogates, private and unassigned
#: code points, and line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


#: The answer to an instance name L{is_instance_name} refuses, wherever it
#: comes (a mint's body, a revocation's path, a listing's query).
INSTANCE_NAME_RULE = (
    "instance_uuid must be a non-empty string of at most 255 characters"
    " without '/' or control characters"
)


def is_instance_name(value: object) -> bool:
    """
    Whether C{value} may name an instance: nova sends its instance's UUID
    (C{9165dbda-f54e-4186-b2cb-e6ca05ac53ee}), other control planes their
    own names, so any printable string of 1 to 255 characters without
    C{/} (it is a path segment of C{/v1/instances/...}). It is logged as
    it is, so it may hold no control characters.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_INSTANCE_UUID_LENGTH
        and "/" not in value
        and not any(unicodedata.category(c) in _UNPRINTABLE for c in value)
    )


def parse_token_request(body: object, max_ttl: int = MAX_TTL) -> TokenRequest:
    """
    Check a decoded JSON body against the token request schema.

    @param max_ttl: the longest life a token may ask for (C{--max-token-ttl}).

    @raise InvalidRequest: naming the first thing that is wrong.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    known = {
        "host",
        "port",
        "instance_uuid",
        "console_type",
        "ttl",
        "single_use",
        *OPTION_FIELDS,
    }
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidRequest(f"unknown field: {unknown[0]}")

    options = parse_console_options(body)
    if "unix_path" in options:
        if body.get("host") is not None or body.get("port") is not None:
            raise InvalidRequest("give either unix_path or host and port, not both")
        return _finish(body, "", 0, options, max_ttl)

    host = body.get("host")
    if host is None:
        raise InvalidRequest("missing host")
    if not isinstance(host, str) or not host:
        raise InvalidRequest("host must be a non-empty string")
    if len(host) > MAX_HOST_LENGTH or any(
        c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "/?#@" for c in host
    ):
        raise InvalidRequest("host must be a host name or an IP address")

    port = body.get("port")
    if port is None:
        raise InvalidRequest("missing port")
    if not _is_int(port) or not 1 <= port <= 65535:
        raise InvalidRequest("port must be an integer from 1 to 65535")
    return _finish(body, host, port, options, max_ttl)


def _finish(
    body: dict[str, Any],
    host: str,
    port: int,
    options: dict[str, Any],
    max_ttl: int = MAX_TTL,
) -> TokenRequest:
    instance_uuid = body.get("instance_uuid")
    if instance_uuid is not None and not is_instance_name(instance_uuid):
        raise InvalidRequest(INSTANCE_NAME_RULE)

    console_type = body.get("console_type", "novnc")
    if console_type not in CONSOLE_TYPES:
        raise InvalidRequest("console_type must be one of: " + ", ".join(CONSOLE_TYPES))

    ttl = body.get("ttl", min(DEFAULT_TTL, max_ttl))
    if not _is_int(ttl) or ttl <= 0:
        raise InvalidRequest("ttl must be a positive integer (seconds)")
    if ttl > max_ttl:
        raise InvalidRequest(f"ttl must be at most {max_ttl} seconds")

    single_use = body.get("single_use", False)
    if not isinstance(single_use, bool):
        raise InvalidRequest("single_use must be true or false")

    return TokenRequest(
        host=host,
        port=port,
        instance_uuid=instance_uuid,
        console_type=console_type,
        ttl=ttl,
        options=options,
        single_use=single_use,
    )


#: Token fields for the RFB security proxy (txvnc.rfb) and unix targets.
OPTION_FIELDS = (
    "unix_path",
    "vnc_password",
    "security",
    "view_only",
    "clipboard",
    "shared",
    "record",
    "record_input",
    "record_clipboard",
)

#: Token fields that ask for the console to be recorded (docs/recording.md):
#: the screen, the browser's key and pointer input, its clipboard text.
RECORD_FIELDS = ("record", "record_input", "record_clipboard")


def parse_console_options(body: dict[str, Any]) -> dict[str, Any]:
    """
    The RFB options of a token request, checked; absent or null fields are
    left out, so a token without them is relayed exactly as before.

    @raise InvalidRequest: naming the first option that is wrong (never
        repeating the password).
    """
    options: dict[str, Any] = {}
    unix_path = body.get("unix_path")
    if unix_path is not None:
        if (
            not isinstance(unix_path, str)
            or not unix_path.startswith("/")
            or "\0" in unix_path
            or len(unix_path.encode("utf-8")) > MAX_UNIX_PATH_LENGTH
            or "/../" in unix_path + "/"
            or "/./" in unix_path + "/"
        ):
            raise InvalidRequest(
                "unix_path must be an absolute, normalised path of at most "
                f"{MAX_UNIX_PATH_LENGTH} bytes"
            )
        options["unix_path"] = unix_path
    password = body.get("vnc_password")
    if password is not None:
        if (
            not isinstance(password, str)
            or not password
            or len(password.encode("utf-8")) > MAX_VNC_PASSWORD_LENGTH
        ):
            raise InvalidRequest(
                "vnc_password must be a string of 1 to "
                f"{MAX_VNC_PASSWORD_LENGTH} bytes"
            )
        options["vnc_password"] = password
    security = body.get("security")
    if security is not None:
        if security not in SECURITY_MODES:
            raise InvalidRequest(
                "security must be one of: " + ", ".join(SECURITY_MODES)
            )
        options["security"] = security
    if security == "vnc" and password is None:
        raise InvalidRequest('security "vnc" needs a vnc_password')
    for flag in ("view_only", "shared", *RECORD_FIELDS):
        value = body.get(flag)
        if value is not None:
            if not isinstance(value, bool):
                raise InvalidRequest(f"{flag} must be true or false")
            options[flag] = value
    clipboard = body.get("clipboard")
    if clipboard is not None:
        if clipboard not in CLIPBOARD_MODES:
            raise InvalidRequest(
                "clipboard must be one of: " + ", ".join(CLIPBOARD_MODES)
            )
        options["clipboard"] = clipboard
    return options
