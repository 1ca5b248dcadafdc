"""
The proxy's one port: the console page, noVNC's files, and WebSocket
upgrades on any path (noVNC's own pages connect to C{/}, ours to
C{/websockify}).
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, NoResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from txvnc.core.accesslog import access_log_formatter_for
from txvnc.core.guarded import GuardedChannel, GuardedSite
from txvnc.proxy.capacity import Slot
from txvnc.proxy.tokencheck import MAX_BODY as TOKEN_CHECK_BODY
from txvnc.proxy.tokencheck import PATH as TOKEN_CHECK
from txvnc.proxy.tokencheck import TokenCheckResource
from txvnc.proxy.websocket import ConsoleProxyFactory

#: Where `npm ci` puts noVNC, relative to a source checkout or the cwd.
NOVNC_PACKAGE = Path("node_modules") / "@novnc" / "novnc"


def is_novnc(directory: str) -> bool:
    """
    Whether C{directory} holds noVNC (its C{core/rfb.js}).
    """
    return (Path(directory) / "core" / "rfb.js").is_file()


def packaged_novnc() -> str:
    """
    The copy of noVNC inside the installed package (C{txvnc/novnc}, put
    there by the wheel's build step; absent in a source tree).
    """
    return str(resources.files("txvnc") / "novnc")


def find_novnc() -> str | None:
    """
    Where noVNC is: C{$TXVNC_NOVNC_DIR}, the copy inside the package, the
    npm package beside the working directory or beside this source tree,
    then Debian's C{/usr/share/novnc}. The packaged copy comes before
    anything that depends on the working directory, so an installed txvnc
    serves the noVNC it was built and tested with.
    """
    candidates = [
        os.environ.get("TXVNC_NOVNC_DIR"),
        packaged_novnc(),
        str(Path.cwd() / NOVNC_PACKAGE),
        str(Path(__file__).resolve().parents[2] / NOVNC_PACKAGE),
        "/usr/share/novnc",
    ]
    for candidate in candidates:
        if candidate and is_novnc(candidate):
            return candidate
    return None


def page_dir() -> str:
    """
    The directory of txvnc's own console page (shipped as package data).
    """
    return str(resources.files("txvnc") / "web")


#: The replay page's files (docs/recording.md), served beside an
#: operator's C{--web} tree as well.
REPLAY_PAGE = ("replay.html", "replay.js", "replay.css", "console.css")


def add_replay_page(static: File, web_dir: str, novnc_dir: str | None) -> None:
    """
    Put txvnc's replay page into an operator's tree (C{--web}), so a replay
    URL opens on any proxy: each of its files at its own path, and noVNC at
    C{/novnc/} for it, unless the tree has a file of that name when the
    proxy starts (theirs wins: an operator may replace the replay page).
    """
    for name in REPLAY_PAGE:
        if not os.path.lexists(os.path.join(web_dir, name)):
            static.putChild(
                name.encode("ascii"), StaticFiles(os.path.join(page_dir(), name))
            )
    if novnc_dir is not None and not os.path.lexists(os.path.join(web_dir, "novnc")):
        static.putChild(b"novnc", StaticFiles(novnc_dir))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class StaticFiles(File):
    """
    Static files without directory listings: a console proxy has nothing to
    browse, and a listing is an invitation to look for something that is.

    Nor does it serve anything outside its directory: Twisted's L{File}
    refuses C{..} but follows symbolic links, so a link under C{--web}
    (left by a package, or planted by whoever can write there) would
    publish whatever it points at. A child whose real path leaves the real
    path of the root is not found; links that stay inside still work.
    """

    def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        #: The real path of the tree's root (set again on every child).
        self.root = os.path.realpath(path)

    def createSimilarFile(self, path: str) -> File:
        child: File = super().createSimilarFile(path)
        if isinstance(child, StaticFiles):
            child.root = self.root
        return child

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def directoryListing(self) -> Resource:
        return NoResource()

    def getChild(self, path: bytes, request: Request) -> Resource:
        # Twisted stats the path as given: a NUL byte raised ValueError (a
        # 500 and a critical traceback in the log), and a segment that is
        # not UTF-8 logged a traceback before its 404.
        if b"\0" in path or not _is_utf8(path):
            return NoResource()
        child: Resource = super().getChild(path, request)
        if isinstance(child, File) and not self._inside(child.path):
            return NoResource()
        return child

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        # The page URL carries the token: never send it on as a Referer.
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        if request.isSecure():
            # Served over TLS: browsers must never come back over plain HTTP.
            request.setHeader(
                b"Strict-Transport-Security", b"max-age=31536000; includeSubDomains"
            )
        if request.path.endswith(b".html") or request.path.endswith(b"/"):
            request.setHeader(b"Cache-Control", b"no-store")
        return super().render_GET(request)


class ConsoleWebSocketResource(WebSocketResource):
    """
    L{WebSocketResource} that also detaches the HTTP channel it takes the
    transport from: the channel's idle timeout would otherwise fire hours
    into a console, and it stays registered as the transport's producer,
    which would keep the relay from registering its own.
    """

    def __init__(self, factory: ConsoleProxyFactory) -> None:
        super().__init__(factory)
        self._console_factory = factory

    def render(self, request: Request) -> bytes | int:
        channel: Any = request.channel
        channel.setTimeout(None)
        transport: Any = channel.transport
        if transport is not None:
            transport.unregisterProducer()
        # The connection's place in the descriptor budget goes with it to
        # the WebSocket protocol (built inside this call), which gives it
        # back when the connection ends; the channel never hears of it again.
        slot = getattr(channel, "slot", None)
        channel.slot = None
        self._console_factory.hand_over(slot)
        try:
            result: bytes | int = super().render(request)
        finally:
            leftover = self._console_factory.take_handover()
            if leftover is not None:
                channel.slot = leftover  # no protocol took it
        return result


def _is_upgrade(request: Request) -> bool:
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and upgrade.strip().lower() == b"websocket"


class ConsoleRoot(Resource):
    """
    Sends a WebSocket upgrade on any path to the console relay and every
    other request to the static tree.
    """

    def __init__(
        self,
        websocket: IResource,
        static: IResource,
        extra: dict[bytes, IResource] | None = None,
    ) -> None:
        super().__init__()
        self._websocket = websocket
        self._static = static
        self._extra = extra or {}

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        if _is_upgrade(request):
            return self._websocket
        if path in self._extra:
            return self._extra[path]
        return self._static.getChildWithDefault(path, request)

    def render(self, request: Request) -> bytes | int:
        if _is_upgrade(request):
            return self._websocket.render(request)
        return self._static.render(request)


#: A C{--frame-ancestors} value: C{'self'} or an origin, the host possibly
#: with a leading C{*.}; nothing that could end the header's source list.
_FRAME_ANCESTOR = re.compile(
    r"(?:https?://(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::(?:\d{1,5}|\*))?)\Z"
)


def frame_ancestor(value: str) -> str:
    """
    One C{--frame-ancestors} value as the CSP source it becomes: C{self}
    (quoted or not) or an origin such as C{https://dashboard.example.com}.

    @raise ValueError: for anything else (a path, a list, a quote).
    """
    if value.strip("'") == "self":
        return "'self'"
    text = value.rstrip("/")
    if not _FRAME_ANCESTOR.match(text):
        raise ValueError(
            f"--frame-ancestors {value!r}: not an origin "
            "(https://host[:port]) or 'self'"
        )
    return text


def frame_headers(frame_ancestors: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    """
    The headers that say who may frame the proxy's pages: nobody by default
    (a framed console can be steered into typing or pasting by the page
    around it: clickjacking), or only C{frame_ancestors}
    (C{--frame-ancestors}), for a dashboard that embeds the console.
    X-Frame-Options cannot name an origin that browsers still honour, so it
    is only sent with the denial; CSP C{frame-ancestors} wins where both are
    understood.
    """
    if not frame_ancestors:
        return [
            (b"Content-Security-Policy", b"frame-ancestors 'none'"),
            (b"X-Frame-Options", b"DENY"),
        ]
    sources = " ".join(frame_ancestors).encode("ascii")
    return [(b"Content-Security-Policy", b"frame-ancestors " + sources)]


class ConsoleChannel(GuardedChannel):
    """
    A L{GuardedChannel} that gives back its place in the proxy's descriptor
    budget (L{txvnc.proxy.capacity}) when it closes, unless a WebSocket
    upgrade took it along.
    """

    slot: Slot | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        slot, self.slot = self.slot, None
        if slot is not None:
            slot.release()
        super().connectionLost(reason)


#: The whole answer to a connection the proxy has no room for.
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    b"Retry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: 38\r\n\r\n"
    b"The console service is busy: try again"
)
#: Seconds a refused connection may stay before it is dropped unanswered.
BUSY_DEADLINE = 2.0


class BusyProtocol(Protocol):
    """
    Answers a connection over the proxy's budget with 503 once its request
    arrives (read, so that closing does not reset the answer away), and
    drops it after L{BUSY_DEADLINE} if nothing arrives.
    """

    def __init__(self, clock: IReactorTime, done: Any) -> None:
        self._clock = clock
        self._done = done
        self._deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._deadline = self._clock.callLater(BUSY_DEADLINE, self._drop)

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None:
            return
        self._cancel()
        transport: Any = self.transport
        transport.write(BUSY)
        transport.loseConnection()

    def _drop(self) -> None:
        self._deadline = None
        transport: Any = self.transport
        transport.abortConnection()

    def _cancel(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel()
        self._done()


#: Refused connections answered at once; past this many the next ones are
#: closed without an answer (each answer holds a descriptor for a moment).
MAX_BUSY = 32


class ConsoleSite(GuardedSite):
    """
    The proxy's L{Site}: its access log keeps page loads and every error,
    but not the fifty-odd successful requests for noVNC's modules that each
    console page makes nor the load balancer's health checks, which would
    bury the console lines (C{quiet_paths}). It
    takes no request bodies but the page's small token check, and a
    request's headers must arrive within the WebSocket handshake timeout
    (L{txvnc.core.guarded}).
    """

    protocol = ConsoleChannel
    _log = Logger()

    def __init__(
        self,
        resource: Any,
        *args: Any,
        quiet_paths: tuple[bytes, ...] = (b"/novnc/",),
        console_factory: ConsoleProxyFactory | None = None,
        frame_ancestors: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, *args, quiet_paths=quiet_paths, **kwargs)
        #: The WebSocket factory behind this site (for the assembly and
        #: its tests to find what they configured).
        self.console_factory = console_factory
        self._frame_headers = frame_headers(frame_ancestors)
        self._busy = 0
        self._busy_logged = -1e9

    def buildProtocol(self, addr: Any) -> Any:
        factory = self.console_factory
        if factory is None:
            return super().buildProtocol(addr)
        slot = factory.budget.take(getattr(addr, "host", None))
        if isinstance(slot, str):
            return self._refuse(addr, slot, factory.clock)
        channel = super().buildProtocol(addr)
        channel.slot = slot
        return channel

    def _refuse(self, addr: Any, why: str, clock: IReactorTime) -> Any:
        """
        A connection over the budget: answered 503 (at most L{MAX_BUSY} at
        a time, the rest closed at once), logged at most once a second.
        """
        now = clock.seconds()
        if now - self._busy_logged >= 1.0:
            self._busy_logged = now
            self._log.warn(
                "refusing connections with 503: {why} ({peer})",
                why=why,
                peer=getattr(addr, "host", addr),
            )
        if self._busy >= MAX_BUSY:
            return None
        self._busy += 1
        return BusyProtocol(clock, self._busy_done)

    def _busy_done(self) -> None:
        self._busy -= 1

    def getResourceFor(self, request: Request) -> IResource:
        # Every answer, the page, noVNC's files, errors and the token
        # check alike, says who may frame it.
        for name, value in self._frame_headers:
            request.setHeader(name, value)
        resource: IResource = super().getResourceFor(request)
        return resource


def console_site(
    factory: ConsoleProxyFactory,
    web_dir: str | None = None,
    novnc_dir: str | None = None,
    timeout: float = 60.0,
    extra: dict[bytes, IResource] | None = None,
    quiet_health: bool = True,
    frame_ancestors: tuple[str, ...] = (),
    replay: IResource | None = None,
) -> Site:
    """
    The proxy's L{Site}.

    @param web_dir: serve this tree at C{/} instead of txvnc's page (e.g.
        Debian's C{/usr/share/novnc}, for its C{vnc_lite.html?path=...}),
        with txvnc's replay page beside it (L{add_replay_page}).
    @param novnc_dir: noVNC's package, mounted at C{/novnc/} under txvnc's
        own page; with C{web_dir}, for the replay page only.
    @param timeout: idle timeout of plain HTTP connections.
    @param quiet_health: keep successful requests for the C{extra}
        resources (health checks) out of the access log
        (C{--access-log-polls} turns it off).
    @param frame_ancestors: origins that may frame the pages
        (C{--frame-ancestors}); none: no page may be framed.
    @param extra: resources served at the top level beside the page (the
        health checks).
    @param replay: the replay page's data (C{GET /replay-data}), logged
        like any page request.

    C{POST /token-check} (L{TokenCheckResource}) is always there: the page
    asks it whether its token is still good before reconnecting; it is
    the only path that takes a request body, of a few hundred bytes.
    """
    if web_dir is not None:
        static = StaticFiles(web_dir)
        add_replay_page(static, web_dir, novnc_dir)
    else:
        static = StaticFiles(page_dir())
        # nova's access URLs name noVNC's vnc_lite.html (vnc_auto.html
        # before nova 19); txvnc's page reads both URL forms.
        static.putChild(
            b"vnc_lite.html", StaticFiles(os.path.join(page_dir(), "vnc_auto.html"))
        )
        if novnc_dir is not None:
            static.putChild(b"novnc", StaticFiles(novnc_dir))
    check = TokenCheckResource(factory.admission, factory.trusted_proxies)
    children = {TOKEN_CHECK: check, **(extra or {})}
    if replay is not None:
        children[b"replay-data"] = replay
    quiet_extra = tuple(b"/" + name for name in extra or {}) if quiet_health else ()
    root = ConsoleRoot(ConsoleWebSocketResource(factory), static, children)
    site = ConsoleSite(
        root,
        timeout=timeout,
        logFormatter=access_log_formatter_for(factory.trusted_proxies),
        header_timeout=factory.limits.handshake_timeout,
        larger_bodies={b"/" + TOKEN_CHECK: TOKEN_CHECK_BODY},
        quiet_paths=(b"/novnc/", *quiet_extra),
        reactor=factory.reactor,
        console_factory=factory,
        frame_ancestors=frame_ancestors,
    )
    site.displayTracebacks = False
    return site
