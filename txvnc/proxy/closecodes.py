"""
Every WebSocket close code txvnc sends, in one place, with the reason the
console page shows for it.

RFC 6455 section 7.4 defines 1000-1015; 4000-4999 are ours. The console
page (C{txvnc/web/console.js}) keeps the same table: a code added here gets
a sentence there.
"""

from __future__ import annotations

#: The console ended normally (for example, the VNC server closed it).
NORMAL = 1000
#: The service is shutting down or restarting.
GOING_AWAY = 1001
#: The browser sent a text message on a binary console.
UNSUPPORTED_DATA = 1003
#: A message from the browser was larger than the limit.
MESSAGE_TOO_BIG = 1009
#: Something went wrong on our side, or the VNC server is unreachable.
INTERNAL_ERROR = 1011
#: The proxy is at --max-connections: try again later.
TRY_AGAIN_LATER = 1013

#: The console's token was revoked while it was open.
REVOKED = 4001
#: No keyboard or mouse input for --idle-timeout seconds.
IDLE_TIMEOUT = 4002
#: The console reached --max-session seconds.
MAX_SESSION = 4003
#: Too many consoles are open with this token (--max-connections-per-token).
TOO_MANY_FOR_TOKEN = 4004
#: The VNC security negotiation failed, or a policy refused the console.
VNC_SECURITY = 4005
#: An administrator closed the console.
KILLED = 4006
#: The console is recorded and its recording failed (a full or slow disk)
#: under --record-on-failure close.
RECORDING_FAILED = 4007

#: What the proxy says with each code (the close frame's reason).
REASONS: dict[int, str] = {
    NORMAL: "The console was closed",
    GOING_AWAY: "Service restarting",
    UNSUPPORTED_DATA: "This console accepts binary messages only",
    MESSAGE_TOO_BIG: "A message from the browser was too large",
    INTERNAL_ERROR: "The console is unavailable",
    TRY_AGAIN_LATER: "The console service is busy: try again later",
    REVOKED: "Console access was revoked",
    IDLE_TIMEOUT: "The console was closed after a period without input",
    MAX_SESSION: "The console reached its maximum session time",
    TOO_MANY_FOR_TOKEN: "Too many consoles are open with this link",
    VNC_SECURITY: "The console's VNC security negotiation failed",
    KILLED: "The console was closed by an administrator",
    RECORDING_FAILED: "Recording failed: this console must be recorded",
}

#: How a console that ends with each code is counted in the metrics.
OUTCOMES: dict[int, str] = {
    GOING_AWAY: "shutdown",
    UNSUPPORTED_DATA: "bad_data",
    MESSAGE_TOO_BIG: "message_too_big",
    INTERNAL_ERROR: "error",
    TRY_AGAIN_LATER: "too_many_connections",
    REVOKED: "revoked",
    IDLE_TIMEOUT: "idle_timeout",
    MAX_SESSION: "max_session",
    TOO_MANY_FOR_TOKEN: "too_many_for_token",
    VNC_SECURITY: "vnc_security",
    KILLED: "killed",
    RECORDING_FAILED: "recording_failed",
}


def close_reason(text: str) -> str:
    """
    C{text} cut to the 123 UTF-8 bytes a close frame can carry.
    """
    data = text.encode("utf-8")
    if len(data) <= 123:
        return text
    return data[:120].decode("utf-8", "ignore") + "..."


def ending(
    outcome: str | None,
    why: str | None,
    local_code: int | None,
    local_reason: bytes | None,
    unclean: str | None,
    was_clean: bool,
    code: int | None,
) -> tuple[str, str]:
    """
    How an opened console ended, for its metrics and its closing line:
    (outcome, why), each kept when already known, else taken from the close
    frame this side sent (C{local_code}, C{local_reason}), a timeout the
    WebSocket library named (C{unclean}), or the browser's close (C{code}).
    """
    if outcome is None:
        outcome = OUTCOMES.get(local_code or 0) or unclean or "ok"
    if why is None:
        if outcome == "keepalive_timeout":
            why = "no answer to a keepalive ping"
        elif local_code not in (None, NORMAL):
            # The WebSocket library failed the connection: the browser broke
            # the protocol.
            text = (local_reason or b"").decode("utf-8", "replace")
            why = f"closed by the proxy ({local_code}: {text})"
        elif was_clean:
            why = f"browser closed ({code})"
        else:
            why = "browser connection lost"
    return outcome, why
