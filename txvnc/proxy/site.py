"""
The proxy's one port: the console page, noVNC's files, and WebSocket
upgrades on any path (noVNC's own pages connect to C{/}, ours to
C{/websockify}).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import IResource, NoResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File

from txvnc.core.accesslog import access_log_formatter_for
from txvnc.core.guarded import GuardedSite
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
    """

    def directoryListing(self) -> Resource:
        return NoResource()

    def getChild(self, path: bytes, request: Request) -> Resource:
        # Twisted stats the path as given: a NUL byte raised ValueError (a
        # 500 and a critical traceback in the log), and a segment that is
        # not UTF-8 logged a traceback before its 404.
        if b"\0" in path or not _is_utf8(path):
            return NoResource()
        child: Resource = super().getChild(path, request)
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

    def render(self, request: Request) -> bytes | int:
        channel = request.channel
        channel.setTimeout(None)
        transport: Any = channel.transport
        if transport is not None:
            transport.unregisterProducer()
        return super().render(request)


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

    def __init__(
        self,
        resource: Any,
        *args: Any,
        quiet_paths: tuple[bytes, ...] = (b"/novnc/",),
        console_factory: ConsoleProxyFactory | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, *args, quiet_paths=quiet_paths, **kwargs)
        #: The WebSocket factory behind this site (for the assembly and
        #: its tests to find what they configured).
        self.console_factory = console_factory


def console_site(
    factory: ConsoleProxyFactory,
    web_dir: str | None = None,
    novnc_dir: str | None = None,
    timeout: float = 60.0,
    extra: dict[bytes, IResource] | None = None,
    quiet_health: bool = True,
    replay: IResource | None = None,
) -> Site:
    """
    The proxy's L{Site}.

    @param web_dir: serve this tree at C{/} instead of txvnc's page (e.g.
        Debian's C{/usr/share/novnc}, for its C{vnc_lite.html?path=...}).
    @param novnc_dir: noVNC's package, mounted at C{/novnc/} under txvnc's
        own page; ignored with C{web_dir}.
    @param timeout: idle timeout of plain HTTP connections.
    @param quiet_health: keep successful requests for the C{extra}
        resources (health checks) out of the access log
        (C{--access-log-polls} turns it off).
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
    else:
        static = StaticFiles(page_dir())
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
    )
    site.displayTracebacks = False
    return site
