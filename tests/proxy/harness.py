"""
Real-socket pieces for proxy tests: the token API and the proxy on
127.0.0.1 in this process, for the scriptable VNC server
(L{tests.support.fakevnc}) and the WebSocket "browser"
(L{tests.support.browser}) to meet through.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import treq
from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.server import Site

from tests.support.browser import Browser, connect_browser
from tests.support.mint import mint
from txvnc.client import OperatorClient
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.consoleauth.secretbox import SecretBox
from txvnc.core.targets import TargetPolicy
from txvnc.httppool import pooled_http_client
from txvnc.proxy.guard import AuthFailureGuard
from txvnc.proxy.security import RFBConfig
from txvnc.proxy.site import console_site, find_novnc
from txvnc.proxy.vnc import VNCConnector
from txvnc.proxy.websocket import ConsoleProxyFactory

KEY = "relay-test-key"


class Stack:
    """
    Token API + proxy, listening on loopback; tear down with L{stop}.
    """

    def __init__(
        self,
        connect_timeout: float = 5.0,
        auth_timeout: float = 5.0,
        rfb: RFBConfig | None = None,
        allowed_unix_dirs: tuple[str, ...] = (),
        limits=None,
        events=None,
        proxy_policy: TargetPolicy | None = None,
        max_auth_failures: int = 20,
        follow_interval: float | None = None,
        clock=None,
        allowed_origins: tuple[str, ...] = (),
        trusted_proxies: tuple = (),
        connector=None,
        audit=None,
    ):
        self.store = MemoryTokenStore()
        # The fake VNC servers listen on any free port.
        api = ConsoleAuthResource(
            self.store,
            KEY,
            reactor,
            "http://proxy.test",
            secrets=SecretBox("harness secret key"),
            allowed_unix_dirs=allowed_unix_dirs,
            policy=TargetPolicy.allow_all(),
        )
        self.api_port = reactor.listenTCP(0, Site(api), interface="127.0.0.1")
        self.api_url = f"http://127.0.0.1:{self.api_port.getHost().port}"
        self.http = pooled_http_client(reactor)
        # The operator client: the tests also revoke through it.
        self.auth = OperatorClient(
            self.http, self.api_url, KEY, reactor, timeout=auth_timeout
        )
        self.factory = ConsoleProxyFactory(
            reactor,
            self.auth,
            connect_timeout=connect_timeout,
            rfb=rfb,
            allowed_unix_dirs=allowed_unix_dirs,
            limits=limits,
            events=events,
            target_policy=proxy_policy or TargetPolicy.allow_all(),
            guard=AuthFailureGuard(reactor, max_auth_failures),
            audit=audit,
            node="stack-proxy",
            clock=clock,
            allowed_origins=allowed_origins,
            trusted_proxies=trusted_proxies,
            revocation_interval=follow_interval,
            connector=connector,
        )
        self.follower = self.factory.follower
        if self.follower is not None:
            self.follower.startService()
        self.proxy_port = reactor.listenTCP(
            0, console_site(self.factory, novnc_dir=find_novnc()), interface="127.0.0.1"
        )
        self.port = self.proxy_port.getHost().port
        self.host = f"127.0.0.1:{self.port}"

    async def mint(
        self, vnc_port: int | None, ttl: int = 600, instance: str = "inst-1", **options
    ) -> str:
        """
        A token for 127.0.0.1:C{vnc_port} (or C{unix_path=...}) with any
        RFB C{options} (security, vnc_password, view_only, ...).
        """
        fields = {"ttl": ttl, "instance_uuid": instance, **options}
        if vnc_port is not None:
            fields.update(host="127.0.0.1", port=vnc_port)
        return await mint(self.api_url, KEY, **fields)

    async def open_browser(
        self,
        query: str,
        origin: str | None = "same",
        headers: dict | None = None,
        path: str = "/websockify",
        protocol: type[Browser] = Browser,
    ) -> Browser:
        return await connect_browser(
            self.port, query, origin=origin, headers=headers, path=path, protocol=protocol
        )

    async def raw_upgrade(
        self, query: str, origin: str | None = "same", headers: dict | None = None
    ):
        """
        A WebSocket upgrade request sent with a plain HTTP client, to read
        the status and reason of a refused handshake.
        """
        request_headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            "Host": self.host,
            **(headers or {}),
        }
        if origin == "same":
            request_headers["Origin"] = f"http://{self.host}"
        elif origin is not None:
            request_headers["Origin"] = origin
        response = await treq.get(
            f"http://{self.host}/websockify?{query}",
            headers=request_headers,
            persistent=False,
        )
        await treq.content(response)
        return response.code, response.phrase.decode()

    async def stop(self) -> None:
        if self.follower is not None:
            await maybeDeferred(self.follower.stopService)
        for console in list(self.factory.consoles):
            console.transport.abortConnection()
        # stopListening answers None for a port a test already closed.
        await maybeDeferred(self.proxy_port.stopListening)
        await maybeDeferred(self.api_port.stopListening)
        await self.http._agent._pool.closeCachedConnections()


def random_block(size: int = 4 * 1024 * 1024 + 7) -> bytes:
    """
    Random bytes whose odd length keeps the stream's cycle out of step with
    every buffer size, so reordering or loss changes the hash.
    """
    return os.urandom(size)


class LogCapture:
    """
    Collects the log events emitted while it is entered; L{failures} names
    the exceptions logged with C{log.failure}.
    """

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc_info: object) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def failures(self, kind: type[BaseException]) -> list[str]:
        return [
            str(e["log_failure"].value)
            for e in self.events
            if "log_failure" in e and e["log_failure"].check(kind)
        ]

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


class Connector(VNCConnector):
    """
    A VNC connector that answers with C{connect(info, protocol)} instead of
    connecting: a Deferred that never fires, or one that fires at once.
    """

    def __init__(self, connect: Callable) -> None:
        super().__init__(reactor)
        self._connect = connect

    def connect(self, info, protocol):
        return self._connect(info, protocol)
