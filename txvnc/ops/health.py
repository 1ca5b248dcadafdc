"""
C{GET /healthz} and C{GET /readyz}, for load balancers and orchestrators.

C{/healthz} says the process is up and serving HTTP (200, always).
C{/readyz} says whether it should get new consoles: 200 when every check
passes (the token store answers, the token API answers), 503 with the
failing checks otherwise, and 503 while the service drains for shutdown.
Both answer JSON, never anything secret. On the public proxy listener
C{/readyz} gives the status alone: why a check failed names internal hosts
and addresses, which are for the log and the API or metrics listener.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

#: Seconds each readiness check may take.
CHECK_TIMEOUT = 2.0

Check = Callable[[], Awaitable[Any]]


class Readiness:
    """
    The named checks that decide readiness, and the draining flag.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, timeout: float = CHECK_TIMEOUT) -> None:
        self._clock = clock
        self._timeout = timeout
        self.checks: dict[str, Check] = {}
        self.draining = False

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def run(self) -> tuple[bool, dict[str, str]]:
        """
        Run every check at once; (all passed, name -> "ok" or why not).
        """
        results: dict[str, str] = {}
        pending = {
            name: Deferred.fromCoroutine(_as_coroutine(check)).addTimeout(
                self._timeout, self._clock
            )
            for name, check in self.checks.items()
        }
        for name, d in pending.items():
            try:
                await d
                results[name] = "ok"
            except Exception as e:
                results[name] = str(e) or type(e).__name__
        if self.draining:
            results["draining"] = "shutting down"
        return all(v == "ok" for v in results.values()), results


async def _as_coroutine(check: Check) -> Any:
    return await check()


class HealthResource(Resource):
    """
    C{/healthz}: the process is up.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"status": "ok"})


class ReadyResource(Resource):
    """
    C{/readyz}: the checks of a L{Readiness}.

    @param public: answer the status only, without the checks (the proxy's
        listener, which anyone may ask); the log has the details either way.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, readiness: Readiness, public: bool = False) -> None:
        super().__init__()
        self._readiness = readiness
        self._public = public

    def render_GET(self, request: Request) -> int:
        d = Deferred.fromCoroutine(self._answer(request))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        ready, checks = await self._readiness.run()
        if not ready:
            self._log.warn("not ready: {checks}", checks=checks)
        body: dict[str, Any] = {"status": "ready" if ready else "not ready"}
        if not self._public:
            body["checks"] = checks
        request.write(_json(request, 200 if ready else 503, body))
        request.finish()

    def _failed(self, failure: Any, request: Request) -> None:
        self._log.failure("readiness check failed", failure)
        request.write(_json(request, 500, {"status": "error"}))
        request.finish()


def _json(request: Request, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


async def http_ok(http: Any, url: str) -> None:
    """
    Whether C{url} answers 200, through the treq-like client C{http}.

    @raise RuntimeError: saying what it answered instead.
    """
    response = await http.get(url, allow_redirects=False)
    await response.content()
    if response.code != 200:
        raise RuntimeError(f"{url} answered {response.code}")


#: The health paths every listener serves: load balancers ask them every
#: few seconds, so their successful answers stay out of access logs.
HEALTH_PATHS = (b"/healthz", b"/readyz")


def ops_children(
    readiness: Readiness, metrics: IResource | None = None, public: bool = False
) -> dict[bytes, IResource]:
    """
    The operational resources a listener serves beside its own; with
    C{public}, a C{/readyz} that tells the status only.
    """
    children: dict[bytes, IResource] = {
        b"healthz": HealthResource(),
        b"readyz": ReadyResource(readiness, public=public),
    }
    if metrics is not None:
        children[b"metrics"] = metrics
    return children


class WithOps(Resource):
    """
    Serves the operational C{children} at the top level and hands every
    other path, untouched, to C{main} (the token API, which routes on the
    whole path itself).
    """

    def __init__(self, main: IResource, children: dict[bytes, IResource]) -> None:
        super().__init__()
        self._main = main
        self._ops = children

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        if path in self._ops and not request.postpath:
            return self._ops[path]
        # Give the segment back: the API sees the path it was sent.
        assert request.prepath is not None and request.postpath is not None
        request.postpath.insert(0, request.prepath.pop())
        return self._main

    def render(self, request: Request) -> bytes | int:
        return self._main.render(request)
