"""
The command-line options for the proxy's limits, kept beside the limits
themselves so that L{txvnc.tap} only lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from txvnc.proxy.capacity import (
    DEFAULT_PENDING_PER_ADDRESS,
    RESERVE,
    default_max_connections,
    descriptor_capacity,
    open_files_limit,
)
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
        None,
        (
            "Consoles open or opening at once; more are closed with 1013. 0: no "
            "limit. [default: what the open-files limit holds, two descriptors "
            f"a console beside {RESERVE} kept and a twentieth left for pages]"
        ),
        int,
    ],
    [
        "max-pending-per-address",
        None,
        DEFAULT_PENDING_PER_ADDRESS,
        (
            "Connections one client address (IPv6: /64) may hold without an "
            "open console (page loads, token checks, handshakes); more get "
            "503. Loopback and --trusted-proxy peers are not capped. 0: no limit."
        ),
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
    "max-pending-per-address",
)
_POSITIVE = ("handshake-timeout", "keepalive-timeout", "max-message-size")


def check_limits(config: Mapping[str, Any]) -> None:
    """
    @raise usage.UsageError: for a limit that makes no sense.
    """
    for name in _NON_NEGATIVE:
        if config[name] is not None and config[name] < 0:
            raise usage.UsageError(f"--{name} must not be negative")
    for name in _POSITIVE:
        if config[name] <= 0:
            raise usage.UsageError(f"--{name} must be positive")
    if config.get("end-at-token-expiry", "no") not in ("yes", "no"):
        raise usage.UsageError("--end-at-token-expiry must be yes or no")


def limits_from(config: Mapping[str, Any]) -> Limits:
    """
    The L{Limits} the options describe; C{--max-connections} and the
    descriptor budget come from this process's open-files limit unless
    given.
    """
    open_files = open_files_limit()
    max_connections = config["max-connections"]
    if max_connections is None:
        max_connections = default_max_connections(open_files)
    return Limits(
        handshake_timeout=config["handshake-timeout"],
        idle_timeout=config["idle-timeout"],
        max_session=config["max-session"],
        keepalive_interval=config["keepalive-interval"],
        keepalive_timeout=config["keepalive-timeout"],
        max_connections=max_connections,
        max_connections_per_token=config["max-connections-per-token"],
        max_message_size=config["max-message-size"],
        max_pending_per_address=config.get(
            "max-pending-per-address", DEFAULT_PENDING_PER_ADDRESS
        ),
        descriptors=descriptor_capacity(open_files),
        end_at_token_expiry=config.get("end-at-token-expiry", "no") == "yes",
    )
