"""
What every route of the token API reads: its configuration, its limits and
how an audit line names the caller.

The routes themselves are in L{txvnc.consoleauth.routes}, one module per
area; L{txvnc.consoleauth.resource.ConsoleAuthResource} puts the two together
behind the L{IResource} the assembly mounts.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from txvnc.consoleauth.keys import ROLES, KeyRing
from txvnc.consoleauth.recordings import RecordingArchive
from txvnc.consoleauth.secretbox import SecretBox
from txvnc.consoleauth.store import ITokenStore
from txvnc.consoleauth.tokens import MAX_TTL
from txvnc.core.audit import AuditLog
from txvnc.core.forwarded import Network, request_client
from txvnc.core.targets import TargetPolicy

#: The largest request body but a proxy's console report (a mint is a few
#: hundred bytes); the listener refuses a longer one before reading it.
MAX_BODY = 64 * 1024
#: A proxy's console report: room for about ten thousand consoles.
MAX_REPORT_BODY = 4 * 1024 * 1024
#: Longest path parameter (a token, instance, console or node name) or
#: instance_uuid query value accepted; tokens are 43 characters.
MAX_PARAMETER = 256


def role_names(roles: frozenset[str]) -> str:
    """
    A key's roles as an audit line or a log line names them (C{admin,proxy}).
    """
    return ",".join(r for r in ROLES if r in roles)


class TokenAPI:
    """
    The token API's configuration: its store, keys, clock, the base of the
    access URLs, the target policy and the audit log. A route gets it as its
    first argument (klein passes the instance its app is bound to).

    @ivar base_url: public base of the proxy, the prefix of access URLs.
    @ivar recordings: the recordings (C{--record-dir}) or L{None}.
    @ivar trusted_proxies: networks whose X-Forwarded-For names the client
        in audit lines (C{--trusted-proxy}): behind a balancer the peer is
        the balancer.
    """

    #: The API's log lines; named after the class of the instance that
    #: logs, so they keep the namespace of the resource the assembly mounts.
    log = Logger()

    def __init__(
        self,
        store: ITokenStore,
        keys: KeyRing | str,
        clock: IReactorTime,
        base_url: str,
        secrets: SecretBox | None = None,
        allowed_unix_dirs: tuple[str, ...] = (),
        policy: TargetPolicy | None = None,
        max_ttl: int = MAX_TTL,
        audit: AuditLog | None = None,
        trusted_proxies: tuple[Network, ...] = (),
        recordings: RecordingArchive | None = None,
    ) -> None:
        self.store = store
        self.keys = KeyRing.single(keys) if isinstance(keys, str) else keys
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self.secrets = secrets
        self.allowed_unix_dirs = allowed_unix_dirs
        self.policy = policy if policy is not None else TargetPolicy.parse([])
        self.max_ttl = max_ttl
        self.audit = audit if audit is not None else AuditLog(clock)
        self.trusted_proxies = tuple(trusted_proxies)
        #: The recordings directory and replay links (L{None}: no
        #: C{--record-dir}, the recording routes answer 404).
        self.recordings = recordings
        # Cooperative: a class that is also a resource
        # (L{txvnc.consoleauth.resource.ConsoleAuthResource}) has its
        # resource half initialised here, without repeating these arguments.
        super().__init__()

    def audit_event(
        self, request: IRequest, roles: frozenset[str], event: str, **fields: Any
    ) -> None:
        """
        One audit line, naming the caller by role and address.
        """
        self.audit.record(
            event,
            actor=role_names(roles),
            client=request_client(request, self.trusted_proxies),
            **fields,
        )
