"""
The RFB security proxy between one browser and one VNC server: the
Twisted-facing half of L{txvnc.rfb}.

It first completes the VNC server's handshake (security, ClientInit with the
token's shared flag, ServerInit), then greets the browser offering security
None, then relays, passing the browser's messages (and, when the clipboard
may not leave the VM, the server's) through the policy filters. Failures
surface as one L{RFBError} with a reason fit for the user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
)
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from txvnc.client import ConnectInfo
from txvnc.core.pem import load_ca
from txvnc.proxy.hostcheck import HostCheckedTLS, HostCheckFailed
from txvnc.rfb.browser import BrowserHandshake
from txvnc.rfb.client_messages import ClientMessageFilter, Limits, StreamState
from txvnc.rfb.errors import ProtocolViolation, RFBError, SecurityNegotiationFailed
from txvnc.rfb.policy import ConsolePolicy, SecuritySettings
from txvnc.rfb.protocol import BrowserReady, Send, ServerReady, StartTLS
from txvnc.rfb.server import VNCServerHandshake
from txvnc.rfb.server_messages import ServerMessageFilter

#: What a browser may send before its handshake is done: noVNC sends
#: nothing until it has the server's version, then a few bytes at a time.
MAX_EARLY_BROWSER_BYTES = 4096
#: What a VNC server may send between its ServerInit and the browser's
#: handshake; it has not been asked for anything yet.
MAX_SERVER_BACKLOG = 1024 * 1024


class VNCTLSConfig:
    """
    How the proxy meets a VeNCrypt server: the CA its certificate must chain
    to, and the client certificate and key to present (like libvirt's
    C{vnc_tls} files). Read once, at start-up.

    @param check_host: whether a TCP server's certificate must also name
        the host its token names (C{--vnc-check-hostname}); nova checks the
        CA alone, and a nova cell's proxy does the same (docs/nova.md).
    """

    def __init__(
        self,
        ca_cert: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        check_host: bool = True,
    ) -> None:
        self.check_host = check_host
        self._ca = load_ca(ca_cert or None)
        self._client: ssl.PrivateCertificate | None = None
        if client_cert:
            pem = FilePath(client_cert).getContent()
            key_pem = FilePath(client_key).getContent() if client_key else pem
            self._client = ssl.PrivateCertificate.loadPEM(pem + b"\n" + key_pem)

    def options_for(self, host: str | None) -> IOpenSSLClientConnectionCreator:
        """
        TLS client options for a VNC server: its certificate must chain to
        the CA (the system's trust store without one) and, for a TCP
        target when C{check_host} is on, name C{host} in its subjectAltName
        (L{HostCheckedTLS}: a certificate naming no host is refused too).
        """
        trust = self._ca if self._ca is not None else ssl.platformTrust()
        if host and self.check_host:
            return HostCheckedTLS(host, trust, self._client)
        # A unix socket has no host name to check (and a nova cell's proxy
        # checks none): the CA alone decides.
        kwargs: dict[str, Any] = {"verify": True, "requireCertificate": True}
        if self._ca is not None:
            kwargs["caCerts"] = [self._ca.original]
        else:
            kwargs["trustRoot"] = trust
        if self._client is not None:
            kwargs["privateKey"] = self._client.privateKey.original
            kwargs["certificate"] = self._client.original
        options: Any = ssl.CertificateOptions(**kwargs)
        return options


@dataclass(frozen=True)
class RFBConfig:
    """
    The proxy-wide RFB settings: the security used when a token names none
    (L{None}: relay untouched), TLS material and the browser limits.
    """

    default_security: str | None = None
    tls: VNCTLSConfig | None = None
    limits: Limits = field(default_factory=Limits)
    #: Seconds from the VNC connection to both handshakes done.
    handshake_timeout: float = 30.0

    def applies_to(self, info: ConnectInfo) -> bool:
        """
        Whether a console goes through the RFB layer: when its token (or the
        proxy default) asks for security, or its token sets a policy.
        """
        return (
            info.security is not None
            or self.default_security is not None
            or info.vnc_password is not None
            or info.view_only is not None
            or info.clipboard is not None
            or info.shared is not None
        )


class Endpoints(Protocol):
    """
    What L{RFBSession} needs from the console around it.
    """

    def to_browser(self, data: bytes) -> None: ...

    def to_vnc(self, data: bytes) -> None: ...

    def start_tls(self, options: IOpenSSLClientConnectionCreator) -> None: ...

    def rfb_ready(self, summary: str) -> None: ...


def settings_for(info: ConnectInfo, config: RFBConfig) -> SecuritySettings:
    mode = info.security or config.default_security or "none"
    password = info.vnc_password.encode("utf-8") if info.vnc_password else None
    return SecuritySettings(mode, password)


def policy_for(info: ConnectInfo) -> ConsolePolicy:
    return ConsolePolicy(
        view_only=bool(info.view_only),
        clipboard=info.clipboard or "both",
        shared=True if info.shared is None else info.shared,
    )


class RFBSession:
    """
    One console's RFB conversation. Calls raise L{RFBError}; the console
    closes with its message.
    """

    def __init__(self, info: ConnectInfo, config: RFBConfig, ends: Endpoints) -> None:
        self._info = info
        self._config = config
        self._ends = ends
        self.policy = policy_for(info)
        self.settings = settings_for(info, config)
        self._server = VNCServerHandshake(self.settings, self.policy.shared)
        self._browser: BrowserHandshake | None = None
        self._early: list[bytes] = []
        self._early_size = 0
        self._state = StreamState()
        self._from_browser: ClientMessageFilter | None = None
        self._from_server: ServerMessageFilter | None = None
        self._server_backlog = b""
        self.summary = ""

    @property
    def relaying(self) -> bool:
        return self._from_browser is not None

    @property
    def dropped(self) -> dict[str, int]:
        return self._state.dropped

    def from_vnc(self, data: bytes) -> None:
        if self._from_browser is not None:
            if self._from_server is not None:
                data = self._from_server.receive(data)
            if data:
                self._ends.to_browser(data)
        elif not self._server.done:
            for action in self._server.receive(data):
                self._server_action(action)
        else:
            # The server spoke before the browser finished its handshake.
            self._server_backlog += data
            if len(self._server_backlog) > MAX_SERVER_BACKLOG:
                raise ProtocolViolation(
                    "the VNC server sent data before the browser was ready"
                )

    def _server_action(self, action: object) -> None:
        if isinstance(action, Send):
            self._ends.to_vnc(action.data)
        elif isinstance(action, StartTLS):
            if self._config.tls is None:
                raise SecurityNegotiationFailed(
                    "VeNCrypt needs the proxy's --vnc-ca-cert"
                )
            host = None if self._info.unix_path else self._info.host
            self._ends.start_tls(self._config.tls.options_for(host))
        elif isinstance(action, ServerReady):
            self.summary = (
                f"RFB {action.version} with {action.security} to the VNC server"
            )
            self._server_backlog = self._server.leftover()
            self._bpp_from(action.server_init)
            self._browser = BrowserHandshake(action.server_init)
            self._ends.to_browser(self._browser.greeting)
            early, self._early = b"".join(self._early), []
            if early:
                self.from_browser(early)

    def _bpp_from(self, server_init: bytes) -> None:
        bits = server_init[4]
        if bits not in (8, 16, 32):
            raise ProtocolViolation(f"the VNC server uses {bits} bits per pixel")
        self._state.bytes_per_pixel = bits // 8

    def from_browser(self, data: bytes) -> None:
        if self._from_browser is not None:
            data = self._from_browser.receive(data)
            if data:
                self._ends.to_vnc(data)
        elif self._browser is None:
            self._early_size += len(data)
            if self._early_size > MAX_EARLY_BROWSER_BYTES:
                raise ProtocolViolation(
                    "the browser sent data before the console was ready"
                )
            self._early.append(data)
        else:
            for action in self._browser.receive(data):
                if isinstance(action, Send):
                    self._ends.to_browser(action.data)
                elif isinstance(action, BrowserReady):
                    self._start_relay(action)

    def _start_relay(self, action: BrowserReady) -> None:
        assert self._browser is not None
        frame_server = not self.policy.clipboard_from_vm
        self._from_browser = ClientMessageFilter(
            self.policy, self._state, self._config.limits, frame_server=frame_server
        )
        if frame_server:
            self._from_server = ServerMessageFilter(self.policy, self._state)
        self.summary += f", RFB {action.version} with None to the browser"
        self._ends.rfb_ready(self.summary)
        rest = self._browser.leftover()
        if rest:
            self.from_browser(rest)
        backlog, self._server_backlog = self._server_backlog, b""
        if backlog:
            self.from_vnc(backlog)


class SecuredRelay(Endpoints, Protocol):
    """
    What L{RFBLink} needs of the relay around it: the session's ends, and
    whether the console is still open and how to end it.
    """

    @property
    def is_open(self) -> bool: ...

    def rfb_failed(self, why: str) -> None: ...


class RFBLink:
    """
    Puts an L{RFBSession} between a relay's two sides: each step that may
    raise L{RFBError} goes through here and ends the console with its
    reason, and both handshakes must be done within
    L{RFBConfig.handshake_timeout} of the VNC connection starting.
    """

    def __init__(
        self,
        relay: SecuredRelay,
        info: ConnectInfo,
        config: RFBConfig,
        clock: IReactorTime,
    ) -> None:
        self._relay = relay
        self._timeout = config.handshake_timeout
        self.session = RFBSession(info, config, self)
        self._deadline: IDelayedCall | None = clock.callLater(
            config.handshake_timeout, self._too_slow
        )

    def from_browser(self, data: bytes) -> None:
        self._step(self.session.from_browser, data)

    def from_vnc(self, data: bytes) -> None:
        self._step(self.session.from_vnc, data)

    def _step(self, step: Callable[[bytes], None], data: bytes) -> None:
        if not self._relay.is_open:
            return
        try:
            step(data)
        except RFBError as e:
            self.failed(str(e))

    def failed(self, why: str) -> None:
        self.stop()
        self._relay.rfb_failed(why)

    def stop(self) -> None:
        """Cancel the handshake deadline."""
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self.failed(
            "the VNC server did not complete the RFB handshake within "
            f"{self._timeout:g}s"
        )

    def dropped_note(self) -> str:
        """What the policy dropped, for the closing line ("" for nothing)."""
        dropped = self.session.dropped
        if not dropped:
            return ""
        counts = ", ".join(f"{n} {what}" for what, n in sorted(dropped.items()))
        return f"; policy dropped {counts}"

    # Endpoints, for the session

    def to_browser(self, data: bytes) -> None:
        self._relay.to_browser(data)

    def to_vnc(self, data: bytes) -> None:
        self._relay.to_vnc(data)

    def start_tls(self, options: IOpenSSLClientConnectionCreator) -> None:
        self._relay.start_tls(options)

    def rfb_ready(self, summary: str) -> None:
        self.stop()
        self._relay.rfb_ready(summary)


def handshake_lost_reason(reason: Failure | None) -> str:
    """
    Why a VNC connection ended before its RFB handshake did, in words: TLS
    errors name what OpenSSL refused (e.g. "certificate verify failed"),
    a failed host check what the certificate lacks.
    """
    if reason is not None and reason.check(HostCheckFailed):
        return f"TLS with the VNC server failed: {reason.getErrorMessage()}"
    if reason is not None and reason.check(SSL.Error):
        details = [
            str(part[2] if isinstance(part, tuple) and len(part) == 3 else part)
            for part in (reason.value.args[0] if reason.value.args else [])
        ]
        why = "; ".join(d for d in details if d) or "handshake failed"
        return f"TLS with the VNC server failed: {why}"
    why = reason.getErrorMessage() if reason is not None else "closed"
    return f"the VNC server closed the connection during the handshake ({why})"


__all__ = ["RFBConfig", "RFBError", "RFBLink", "RFBSession", "VNCTLSConfig"]
