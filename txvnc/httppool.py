"""
The HTTP client the token API client runs on: a persistent connection pool
that keeps a few connections warm (a proxy checks a token for every console
it opens), with a short way through treq for the requests a proxy makes most.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.http_headers import Headers

from txvnc.core.pem import load_ca

#: Connections a proxy keeps open to the token API, and requests it has in
#: flight at once: a token check takes well under a millisecond at the API,
#: so 16 connections answer thousands of consoles a second.
API_CONNECTIONS = 16


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    Twisted's factory for one pooled connection, without its "Starting
    factory _HTTP11ClientFactory(...)" and "Stopping factory" lines: two
    lines in the operator's log for every connection to the token API say
    nothing an operator can act on. (The one private name of Twisted used
    outside L{txvnc.proxy.fastpath}; tests/proxy/test_upstream_internals.py
    checks it.)
    """

    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """A persistent connection pool whose connections are not logged."""

    _factory = _QuietClientFactory


class PooledHTTPClient(HTTPClient):
    """
    treq's client, with a short way through for what a proxy asks most (a
    token check, a revocation poll: no body, no redirects, an ASCII URL):
    straight to the pooled L{Agent}, past treq's URL parsing (hyperlink,
    IDNA), cookie jar and content decoder, which were about half of the
    client's time per token check. Everything else is treq's.
    """

    def __init__(self, agent: Agent) -> None:
        super().__init__(agent)
        self._pooled_agent = agent

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        if (
            kwargs.get("allow_redirects", True)
            or not isinstance(url, str)
            or set(kwargs) - {"headers", "allow_redirects"}
        ):
            return super().request(method, url, **kwargs)
        try:
            uri = url.encode("ascii")
        except UnicodeEncodeError:
            return super().request(method, url, **kwargs)
        headers = Headers(kwargs.get("headers") or {})
        return self._pooled_agent.request(method.encode("ascii"), uri, headers)


def pooled_http_client(
    reactor: Any, max_per_host: int = API_CONNECTIONS, ca_file: str | None = None
) -> HTTPClient:
    """
    A treq client whose connections stay open between requests: up to
    C{max_per_host} of them, each kept for two minutes after its last
    request. Pair it with a L{ConsoleAuthClient} whose C{max_in_flight} is
    the same number, or a burst opens (and closes) more.

    @param ca_file: PEM CA certificate that https servers must chain to,
        instead of the system's trusted CAs.
    """
    pool = QuietConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_per_host
    pool.cachedConnectionTimeout = 120
    # A kept connection the server closed meanwhile is retried once on a
    # new one (idempotent requests only): Twisted's default, said here
    # because the proxy depends on it after an idle spell.
    pool.retryAutomatically = True
    if ca_file is None:
        return PooledHTTPClient(Agent(reactor, pool=pool))
    policy = BrowserLikePolicyForHTTPS(trustRoot=load_ca(ca_file))
    return PooledHTTPClient(Agent(reactor, contextFactory=policy, pool=pool))
