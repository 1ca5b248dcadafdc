"""
C{twistd txvnc}: options in, services out.

This module holds the options table (every option with its default and
help line, C{--config FILE} read first) and C{makeService}, which hands the
checked settings to the assembly (L{txvnc.service.assemble.build}). Apart
from the worker's entry point, this is the only place that takes the global
reactor; everything the assembly builds is given one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from txvnc import __version__
from txvnc.client import DEFAULT_TIMEOUT
from txvnc.consoleauth.stores import STORE_FORMS
from txvnc.consoleauth.tokens import MAX_TTL
from txvnc.core.forwarded import parse_networks
from txvnc.core.targets import DEFAULT_RULES
from txvnc.ops.spin import DEFAULT_SPIN_US
from txvnc.proxy.guard import DEFAULT_MAX_FAILURES
from txvnc.proxy.options import LIMIT_PARAMETERS
from txvnc.proxy.revocation import DEFAULT_INTERVAL
from txvnc.proxy.site import frame_ancestor
from txvnc.service.assemble import build
from txvnc.service.config import apply_config, config_path, load_config
from txvnc.service.listeners import report_in_one_line, say
from txvnc.service.novaconf import nova_config_path, read_nova_config
from txvnc.service.settings import Settings

DEFAULT_LISTEN = "tcp:6080"
DEFAULT_API_LISTEN = "tcp:6081:interface=127.0.0.1"


class Options(usage.Options):
    """
    The options of C{twistd txvnc}; after parsing, C{settings} holds them
    checked and typed.
    """

    settings: Settings

    synopsis = "[options]"
    longdesc = (
        "Runs the txvnc console proxy and its token API. By default both run "
        "in this process: the API mints short-lived tokens (POST /v1/tokens "
        "with Authorization: Bearer KEY, the key read from --api-key-file, "
        "created on first start), and the proxy serves the console page and "
        "turns each browser WebSocket carrying a valid token into a TCP "
        "connection to the token's VNC server. --no-api runs the proxy alone "
        "against a remote --consoleauth-url; --no-proxy runs the API alone. "
        "Listeners are Twisted endpoint strings (tcp:, ssl:, unix:, systemd:). "
        "The API key file holds one key a line, 'ROLE KEY' with ROLE admin, "
        "proxy or admin,proxy (a bare KEY has both roles); it is re-read on "
        "SIGHUP. Tokens may only name targets allowed by --allowed-target "
        "(default: " + ", ".join(DEFAULT_RULES) + "); the proxy checks again "
        "before connecting. Revoking a token or an instance closes its open "
        "consoles on every proxy (close code 4001)."
    )

    optFlags = [
        ["no-api", None, "Do not run the token API (use --consoleauth-url)."],
        ["no-proxy", None, "Do not run the console proxy."],
        [
            "access-log-polls",
            None,
            (
                "Also log successful health checks, metrics scrapes and the "
                "proxies' revocation polls and session reports in the access log."
            ),
        ],
        [
            "record-all",
            None,
            "Record every console, not only those whose token asks (--record-dir).",
        ],
    ]

    optParameters = [
        ["listen", None, DEFAULT_LISTEN, "Proxy listener: console page and WebSocket."],
        ["api-listen", None, DEFAULT_API_LISTEN, "Token API listener."],
        [
            "api-key-file",
            None,
            "txvnc-api.key",
            (
                "API keys file (ROLE KEY a line; see docs/api.md); created with "
                "one admin+proxy key (mode 0600) when missing."
            ),
        ],
        ["store", None, "sqlite:txvnc.sqlite", f"Token store: {STORE_FORMS}."],
        [
            "consoleauth-url",
            None,
            None,
            "Token API the proxy checks tokens with. [default: the embedded API]",
        ],
        [
            "base-url",
            None,
            None,
            "Public base of access URLs. [default: http://<hostname>:<proxy port>]",
        ],
        [
            "web",
            None,
            None,
            (
                "Serve this noVNC tree at / instead of txvnc's page "
                "(e.g. /usr/share/novnc); txvnc's replay page is served "
                "beside it unless the tree has files of its names."
            ),
        ],
        [
            "novnc",
            None,
            None,
            (
                "noVNC package directory for txvnc's page. "
                "[default: the copy inside the package, then "
                "./node_modules/@novnc/novnc, then /usr/share/novnc]"
            ),
        ],
        [
            "token-check-timeout",
            None,
            DEFAULT_TIMEOUT,
            "Seconds to wait for the token API, a free connection to it included.",
            float,
        ],
        [
            "connect-timeout",
            None,
            10.0,
            "Seconds to wait for a VNC server to accept.",
            float,
        ],
        [
            "secret-key-file",
            None,
            "txvnc-secret.key",
            (
                "File holding the key that encrypts VNC passwords in the token "
                "store; created (mode 0600) when missing."
            ),
        ],
        [
            "vnc-security",
            None,
            None,
            (
                "Security toward VNC servers for tokens that name none: none, "
                "vnc or vencrypt. [default: relay the browser's RFB untouched]"
            ),
        ],
        [
            "vnc-ca-cert",
            None,
            None,
            "PEM CA that VeNCrypt servers' certificates must chain to.",
        ],
        [
            "vnc-client-cert",
            None,
            None,
            "PEM client certificate presented to VeNCrypt servers.",
        ],
        [
            "vnc-client-key",
            None,
            None,
            "PEM key of --vnc-client-cert. [default: in the certificate file]",
        ],
        [
            "vnc-check-hostname",
            None,
            "yes",
            (
                "yes: a VeNCrypt server's certificate must name the token's "
                "host; no: the CA alone decides, as nova does (--nova-config "
                "sets no)."
            ),
        ],
        [
            "purge-interval",
            None,
            60.0,
            "Seconds between purges of expired tokens.",
            float,
        ],
        [
            "workers",
            None,
            1,
            (
                "Proxy processes sharing the --listen port (tcp: only); the "
                "API stays in this process, which restarts any worker that dies."
            ),
            int,
        ],
        *LIMIT_PARAMETERS,
        [
            "poll-spin",
            None,
            DEFAULT_SPIN_US,
            (
                "Microseconds a proxy process keeps polling before it sleeps "
                "while traffic flows; cuts round trips only where browsers "
                "are microseconds away (loopback), costs at most 2% of a "
                "core in polls that find nothing (0, the default: always "
                "sleep)."
            ),
            float,
        ],
        [
            "drain-timeout",
            None,
            10.0,
            ("On SIGTERM, seconds open consoles get to close after being told "
            "(close code 1001) before they are dropped."),
            float,
        ],
        [
            "config",
            None,
            None,
            ("Read options from this TOML file first; the command line wins "
            "(see docs/txvnc.toml.example)."),
        ],
        [
            "nova-config",
            None,
            None,
            ("Run as a nova cell's console proxy: read this nova.conf first "
            "(listener, TLS, origins, VeNCrypt, [database] connection as the "
            "token store); --config and the command line win (docs/nova.md)."),
        ],
        [
            "consoleauth-ca",
            None,
            None,
            ("PEM CA certificate the token API's https certificate must chain "
            "to. [default: the system's trusted CAs]"),
        ],
        [
            "redis-ca",
            None,
            None,
            ("PEM CA certificate a rediss:// store's server certificate must "
            "chain to. [default: the system's trusted CAs]"),
        ],
        [
            "log-format",
            None,
            "text",
            ("text: twistd's log lines; json: one JSON object per line on "
            "standard output."),
        ],
        [
            "metrics-listen",
            None,
            None,
            ("Also serve /metrics, /healthz and /readyz on this endpoint (for a "
            "proxy run with --no-api; the API listener always serves them)."),
        ],
        [
            "max-token-ttl",
            None,
            MAX_TTL,
            "Longest token lifetime a mint may ask for, in seconds.",
            int,
        ],
        [
            "max-auth-failures",
            None,
            DEFAULT_MAX_FAILURES,
            (
                "Failed console requests per minute per client address (IPv6: "
                "per /64) before its token checks are paced to that rate and "
                "its failures answered 429; valid tokens still open (0: no limit)."
            ),
            int,
        ],
        [
            "audit-log",
            None,
            None,
            (
                "Append an audit event per mint, failed check, revocation and "
                "console open/close to this file (JSON lines)."
            ),
        ],
        [
            "node-name",
            None,
            None,
            (
                "This proxy's name in the API's console list. "
                "[default: <hostname>:<proxy port>]"
            ),
        ],
        [
            "revocation-poll-interval",
            None,
            DEFAULT_INTERVAL,
            "Seconds between the proxy's reads of the revocation feed.",
            float,
        ],
        [
            "record-dir",
            None,
            None,
            (
                "Write console recordings here (tokens minted with "
                '"record": true, or all with --record-all); the API lists and '
                "serves them from here (docs/recording.md)."
            ),
        ],
        [
            "record-on-failure",
            None,
            "close",
            (
                "When a recording cannot be written (disk full or too slow): "
                "close the console (code 4007) or continue unrecorded."
            ),
        ],
        [
            "record-retention",
            None,
            0.0,
            "Delete recordings older than this many days (0: keep them).",
            float,
        ],
        [
            "replay-ttl",
            None,
            600,
            "Seconds a replay URL (POST /v1/recordings/{id}/replay) stays valid.",
            int,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allowed-origin"] = []
        self["trusted-proxy"] = []
        self["allowed-unix-dir"] = []
        self["allowed-target"] = []
        self["frame-ancestors"] = []
        self["nova-ignored"] = []

    def opt_allowed_unix_dir(self, directory: str) -> None:
        """Tokens may name VNC unix sockets under this directory (repeatable)."""
        self["allowed-unix-dir"].append(directory)

    def opt_allowed_target(self, rule: str) -> None:
        """
        Allow tokens for this CIDR or host with a port range, e.g.
        10.0.0.0/8:5900-6999 (repeatable; replaces the default).
        """
        self["allowed-target"].append(rule)

    def opt_trusted_proxy(self, network: str) -> None:
        """
        Believe X-Forwarded-For from this address or CIDR network, e.g. a
        load balancer (repeatable).
        """
        try:
            parse_networks([network])
        except ValueError:
            raise usage.UsageError(
                f"--trusted-proxy {network!r}: not an address or CIDR network"
            ) from None
        self["trusted-proxy"].append(network)

    def opt_frame_ancestors(self, origin: str) -> None:
        """
        Let pages of this origin (https://host[:port], or 'self') frame the
        console page, e.g. an operator's dashboard (repeatable; default: no
        page may frame it).
        """
        try:
            frame_ancestor(origin)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["frame-ancestors"].append(origin)

    def opt_allowed_origin(self, origin: str) -> None:
        """Also accept WebSockets from this origin or host name (repeatable)."""
        self["allowed-origin"].append(origin)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Read C{--nova-config FILE}, then C{--config FILE}, so that the
        command line wins.

        Under twistd (which makes these options its sub-command's), a usage
        error is one line on stderr and exit status 1, rather than twistd's
        whole help text with the error at its end, and so is a failure to
        start later on (L{report_in_one_line}).
        """
        argv = list(sys.argv[1:] if options is None else options)
        try:
            nova_path = nova_config_path(argv)
            if nova_path is not None:
                nova = read_nova_config(nova_path)
                apply_config(self, nova.values, nova_path)
                self["nova-ignored"] = list(nova.ignored)
            path = config_path(argv)
            if path is not None:
                apply_config(self, load_config(path), path)
            super().parseOptions(argv)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise  # parsed by a caller of its own, which reports it
            say(str(e))
            raise SystemExit(1) from None
        if getattr(self, "parent", None) is not None:
            report_in_one_line()

    def opt_version(self) -> None:
        """Print txvnc's version and exit."""
        print(f"txvnc {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        """
        Check everything that can be checked before start-up, so a mistake
        is a usage message rather than a traceback from makeService; the
        result, typed, is C{self.settings}.
        """
        self.settings = Settings.from_options(self)


def makeService(config: Options, reactor: Any = None) -> IService:
    """
    The whole of C{twistd txvnc} for the checked options, on C{reactor}
    (the global one unless a test gives its own).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    return build(config.settings, reactor, config.parent)
