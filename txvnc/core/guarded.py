"""
HTTP channels that an attacker cannot hold open or fill up.

Twisted's L{HTTPChannel} has an idle timeout, but every byte received resets
it: a client sending its request one byte a second (slowloris) keeps a
connection for hours, and a few thousand such clients hold every file
descriptor the proxy has. Twisted also reads a request's whole body before
any resource sees it, spooling a large one to a temporary file, so a
C{Content-Length} of a few gigabytes fills the disk whatever the resource
would have answered.

L{GuardedSite} gives each request a deadline for its headers (from the
connection's start, or from the end of the previous response) and refuses a
body over its limit as soon as the headers say how long it is.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

#: Seconds a client has to send a request's headers, unless told otherwise.
DEFAULT_HEADER_TIMEOUT = 30.0


def _ignore(*args: Any) -> None:
    pass


class GuardedChannel(HTTPChannel):
    """
    An L{HTTPChannel} with a header deadline and a body size limit, both set
    by its L{GuardedSite}.

    @ivar header_timeout: seconds to receive a request's headers, or L{None}.
    @ivar max_body: the largest request body accepted, in bytes.
    """

    _log = Logger()
    header_timeout: float | None = DEFAULT_HEADER_TIMEOUT
    max_body = 0
    #: Path prefixes allowed a larger body than C{max_body}, and their limit.
    larger_bodies: dict[bytes, int] = {}
    _header_call: IDelayedCall | None = None
    _served = False
    _heard = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm_header_deadline()

    def allHeadersReceived(self) -> None:
        self._cancel_header_deadline()
        if self.length is None:
            # Chunked: a body whose size nobody knows yet.
            self._refuse(b"411 Length Required", "a chunked request body")
            return
        limit = self.max_body
        path = getattr(self, "_path", b"") or b""
        for prefix, larger in self.larger_bodies.items():
            if path.startswith(prefix):
                limit = larger
        if self.length is not None and self.length > limit:
            self._refuse(
                b"413 Content Too Large",
                f"a request body of {self.length} bytes (limit {limit})",
            )
            return
        super().allHeadersReceived()

    def dataReceived(self, data: bytes) -> None:
        self._heard = True
        super().dataReceived(data)

    def requestDone(self, request: Any) -> None:
        self._served = True
        # Armed before the next request's buffered bytes are parsed, so its
        # headers (if all there) cancel it at once.
        if self.persistent:
            self._arm_header_deadline()
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_header_deadline()
        super().connectionLost(reason)

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._heard = False
        if self.header_timeout is not None:
            self._header_call = self.callLater(
                self.header_timeout, self._header_deadline_passed
            )

    def _cancel_header_deadline(self) -> None:
        if self._header_call is not None:
            if self._header_call.active():
                self._header_call.cancel()
            self._header_call = None

    def _header_deadline_passed(self) -> None:
        self._header_call = None
        if self._served and not self._heard:
            # An idle keep-alive connection, not an attack: close it quietly.
            self.setTimeout(None)
            self.loseConnection()
            return
        if not self._heard:
            # Not one byte of a request: a silent socket, or a TLS handshake
            # that never finished. Nobody would read a 408 (and under TLS it
            # could not even be sent), so waiting for it to flush would only
            # hold the connection another abortTimeout.
            self._log.info(
                "dropped {peer}: no request within {timeout:g}s",
                peer=_peer(self),
                timeout=self.header_timeout,
            )
            self.setTimeout(None)
            transport: ITransport | None = self.transport
            if transport is not None:
                transport.abortConnection()  # type: ignore[attr-defined]
            return
        self._log.info(
            "dropped {peer}: no complete request headers within {timeout:g}s",
            peer=_peer(self),
            timeout=self.header_timeout,
        )
        self._close_with(b"408 Request Timeout")

    def lineLengthExceeded(self, line: bytes) -> None:
        # Twisted drops the connection without a word, and with the rest of
        # the line unread the kernel answers with a reset: the client never
        # learns why. Say it, then close as _close_with does.
        if getattr(self, "_HTTPChannel__first_line", 0):
            self._refuse(b"414 URI Too Long", "request line over 16 KiB")
        else:
            self._refuse(
                b"431 Request Header Fields Too Large", "header line over 16 KiB"
            )

    def _refuse(self, status: bytes, what: str) -> None:
        self._log.info("refused {peer}: {what}", peer=_peer(self), what=what)
        self._close_with(status)

    def _close_with(self, status: bytes) -> None:
        """
        Answer C{status}, ignore the rest of the request, and close; abort
        if the client does not take the answer within C{abortTimeout}.

        On TCP the close is a lingering one: the answer is followed by a
        half-close, and whatever the client still sends is read and dropped
        until it closes too. Closing a socket with unread bytes makes the
        kernel send a reset, which can reach the client before it has read
        the answer.
        """
        for name in ("dataReceived", "lineReceived", "rawDataReceived"):
            setattr(self, name, _ignore)
        transport: ITransport | None = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 " + status + b"\r\nConnection: close\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self.setTimeout(None)
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(
                self.abortTimeout, self.forceAbortClient
            )
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is None:
            self.loseConnection()
            return
        transport.resumeProducing()  # type: ignore[attr-defined]
        half_close()


def _peer(channel: HTTPChannel) -> str:
    transport: ITransport | None = channel.transport
    if transport is None:
        return "-"
    peer = transport.getPeer()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)


class GuardedSite(Site):
    """
    A L{Site} whose channels are L{GuardedChannel}s.

    @param header_timeout: seconds each request has to send its headers.
    @param max_body: the largest request body accepted, in bytes (0: none).
    @param larger_bodies: path prefixes allowed a larger body, and their
        limit (the token API's console reports).
    @param quiet_paths: path prefixes whose successful requests stay out
        of the access log: machines asking every few seconds (health checks,
        metrics scrapes, the proxies' revocation polls and session reports)
        would write tens of thousands of lines a day per caller and bury
        everything a person needs to read. Their errors are still logged.
    """

    # A bare channel, not Twisted's HTTP/2-negotiating wrapper: WebSocket
    # upgrades are HTTP/1.1, and the wrapper hides the channel's settings.
    protocol = GuardedChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: Any,
        *args: Any,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        max_body: int = 0,
        larger_bodies: dict[bytes, int] | None = None,
        quiet_paths: tuple[bytes, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, *args, **kwargs)
        self.header_timeout = header_timeout
        self.max_body = max_body
        self.larger_bodies = dict(larger_bodies or {})
        self.quiet_paths = quiet_paths

    def log(self, request: Any) -> None:
        if request.code < 400 and request.path.startswith(self.quiet_paths):
            return
        super().log(request)

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.header_timeout = self.header_timeout
        channel.max_body = self.max_body
        channel.larger_bodies = self.larger_bodies
        return channel
