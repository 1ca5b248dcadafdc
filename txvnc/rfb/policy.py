"""
What a token lets the browser do on a console, beyond seeing it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Clipboard directions: both ways, browser to VM only, VM to browser only,
#: or neither.
CLIPBOARD_MODES = ("both", "to_vm", "from_vm", "none")
#: How the proxy authenticates to the VNC server.
SECURITY_MODES = ("none", "vnc", "vencrypt")


@dataclass(frozen=True)
class ConsolePolicy:
    """
    Per-token rules the proxy enforces by reading RFB messages.

    @ivar view_only: drop keyboard, pointer, clipboard, resize and power
        (xvp) input from the browser.
    @ivar clipboard: which way clipboard text may flow.
    @ivar shared: the ClientInit shared flag the proxy sends: C{True} lets
        other viewers stay connected, C{False} asks for exclusive access.
    """

    view_only: bool = False
    clipboard: str = "both"
    shared: bool = True

    def __post_init__(self) -> None:
        if self.clipboard not in CLIPBOARD_MODES:
            raise ValueError(f"unknown clipboard mode {self.clipboard!r}")

    @property
    def clipboard_to_vm(self) -> bool:
        return not self.view_only and self.clipboard in ("both", "to_vm")

    @property
    def clipboard_from_vm(self) -> bool:
        return self.clipboard in ("both", "from_vm")


@dataclass(frozen=True)
class SecuritySettings:
    """
    How to authenticate to the VNC server for one console.

    @ivar mode: C{none}, C{vnc} (VNC Authentication) or C{vencrypt}
        (VeNCrypt X509Vnc when a password is given, else X509None).
    @ivar password: the VNC password, or L{None}. Never logged.
    """

    mode: str = "none"
    password: bytes | None = None

    def __post_init__(self) -> None:
        if self.mode not in SECURITY_MODES:
            raise ValueError(f"unknown security mode {self.mode!r}")

    def __repr__(self) -> str:
        # Keeps the password out of tracebacks and log lines.
        hidden = "None" if self.password is None else "'***'"
        return f"SecuritySettings(mode={self.mode!r}, password={hidden})"
