"""
The command-line options for the proxy's limits, kept beside the limits
themselves so that L{txvnc.tap} only lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from txvnc.proxy.limits import Limits

_DEFAULT = Limits()

#: usage.Options parameters: name, default, help, type.
LIMIT_PARAMETERS: list[list[Any]] = [
    [
        "handshake-timeout",
        None,
        _DEFAULT.handshake_timeout,
        (
            "Seconds a client has to send its HTTP request headers, and again to "
            "finish the WebSocket upgrade (token check included)."
        ),
        float,
    ],
    [
        "idle-timeout",
        None,
        _DEFAULT.idle_timeout,
        (
            "Close a console after this many seconds without keyboard, mouse or "
            "clipboard input (close code 4002); the page is warned a minute "
            "before. 0: never."
        ),
        float,
    ],
    [
        "max-session",
        None,
        _DEFAULT.max_session,
        (
            "Close a console after this many seconds in any case (close code "
            "4003). 0: no limit."
        ),
        float,
    ],
    [
        "end-at-token-expiry",
        None,
        "no",
        (
            "yes: also close a console when the token that opened it expires "
            "(close code 4003), as nova's [consoleauth] "
            "enforce_session_timeout does."
        ),
    ],
    [
        "keepalive-interval",
        None,
        _DEFAULT.keepalive_interval,
        "Seconds between WebSocket pings to each browser. 0: no pings.",
        float,
    ],
    [
        "keepalive-timeout",
        None,
        _DEFAULT.keepalive_timeout,
        "Seconds to wait for a ping's answer before dropping the browser.",
        float,
    ],
    [
        "max-connections",
        None,
        _DEFAULT.max_connections,
        ("Consoles open or opening at once; more are closed with 1013. 0: no limit."),
        int,
    ],
    [
        "max-connections-per-token",
        None,
        _DEFAULT.max_connections_per_token,
        (
            "Consoles open at once with one token; more are closed with 4004. "
            "0: no limit."
        ),
        int,
    ],
    [
        "max-message-size",
        None,
        _DEFAULT.max_message_size,
        (
            "Largest WebSocket frame or message taken from a browser, in bytes; "
            "larger ones close the console with 1009."
        ),
        int,
    ],
]

_NON_NEGATIVE = (
    "idle-timeout",
    "max-session",
    "keepalive-interval",
    "max-connections",
    "max-connections-per-token",
)
_POSITIVE = ("handshake-timeout", "keepalive-timeout", "max-message-size")


def check_limits(config: Mapping[str, Any]) -> None:
    """
    @raise usage.UsageError: for a limit that makes no sense.
    """
    for name in _NON_NEGATIVE:
        if config[name] < 0:
            raise usage.UsageError(f"--{name} must not be negative")
    for name in _POSITIVE:
        if config[name] <= 0:
            raise usage.UsageError(f"--{name} must be positive")
    if config.get("end-at-token-expiry", "no") not in ("yes", "no"):
        raise usage.UsageError("--end-at-token-expiry must be yes or no")


def limits_from(config: Mapping[str, Any]) -> Limits:
    """
    The L{Limits} the options describe.
    """
    return Limits(
        handshake_timeout=config["handshake-timeout"],
        idle_timeout=config["idle-timeout"],
        max_session=config["max-session"],
        keepalive_interval=config["keepalive-interval"],
        keepalive_timeout=config["keepalive-timeout"],
        max_connections=config["max-connections"],
        max_connections_per_token=config["max-connections-per-token"],
        max_message_size=config["max-message-size"],
        end_at_token_expiry=config.get("end-at-token-expiry", "no") == "yes",
    )
