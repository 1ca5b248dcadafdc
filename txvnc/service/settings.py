"""
What C{twistd txvnc} was told, checked once and typed.

L{Settings.from_options} checks everything that can be checked before
start-up (numbers in range, files readable, directories writable, the
listeners usable, noVNC present), so a mistake is a usage message rather
than a traceback from the assembly, and fills in what the options leave to
be derived (the token API's URL, the access URLs' base, noVNC's directory,
the node name). The assembly then reads typed attributes; a worker process
builds its own L{Settings} from the options it is sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from twisted.python import usage

from txvnc.consoleauth.keys import (
    ADMIN,
    API_KEY_FILE,
    PROXY,
    SECRET_KEY_FILE,
    KeyFileError,
    key_with_role,
    read_private_keys,
)
from txvnc.consoleauth.store import UnknownStore
from txvnc.consoleauth.stores import parse_store_description
from txvnc.consoleauth.tokens import SECURITY_MODES
from txvnc.core.forwarded import Network, parse_networks
from txvnc.core.pem import load_ca
from txvnc.core.targets import PolicyError, TargetPolicy
from txvnc.ops.spin import MAX_SPIN_US
from txvnc.proxy.limits import Limits
from txvnc.proxy.options import check_limits, limits_from
from txvnc.proxy.security import RFBConfig, VNCTLSConfig
from txvnc.proxy.site import find_novnc, frame_ancestor, is_novnc
from txvnc.service.endpoints import (
    check_http_url,
    check_listener,
    default_base_url,
    listener_url,
    node_name,
    parse_tcp_listener,
)
from txvnc.service.tls import TLSConfigError, load_options, parse_ssl_description

#: Options that must be more than 0.
_POSITIVE = (
    "token-check-timeout",
    "connect-timeout",
    "purge-interval",
    "drain-timeout",
    "max-token-ttl",
    "revocation-poll-interval",
)


@dataclass(frozen=True)
class Settings:
    """
    One process's settings, from C{twistd txvnc}'s options.

    @ivar options: the options as given, with the derived values filled in
        under their option names (C{consoleauth-url}, C{base-url},
        C{novnc}, and C{rfb} and C{target-policy} as built): what a worker
        process is told, and what the lines building the proxy factory and
        the token API resource still read.
    @ivar consoleauth_url: the token API the proxy asks (L{None} with
        C{--no-proxy} unless given).
    @ivar base_url: the access URLs' base (L{None} with C{--no-api}
        unless given).
    @ivar rfb: the proxy's RFB settings, the TLS files read (L{None} with
        C{--no-proxy}).
    @ivar node_name: this proxy's name in the token API's console list.
    """

    options: Mapping[str, Any]
    run_api: bool
    run_proxy: bool
    listen: str
    api_listen: str
    metrics_listen: str | None
    api_key_file: str
    secret_key_file: str
    store: str
    redis_ca: str | None
    base_url: str | None
    consoleauth_url: str | None
    consoleauth_ca: str | None
    web: str | None
    novnc: str | None
    rfb: RFBConfig | None
    target_policy: TargetPolicy
    allowed_origins: tuple[str, ...]
    allowed_unix_dirs: tuple[str, ...]
    frame_ancestors: tuple[str, ...]
    trusted_proxies: tuple[Network, ...]
    limits: Limits
    token_check_timeout: float
    connect_timeout: float
    purge_interval: float
    drain_timeout: float
    revocation_poll_interval: float
    max_token_ttl: int
    max_auth_failures: int
    workers: int
    poll_spin: float
    audit_log: str | None
    node_name: str
    log_format: str
    access_log_polls: bool
    #: C{--nova-config}, and what of it txvnc does not honour.
    nova_config: str | None = None
    nova_ignored: tuple[str, ...] = ()
    #: Recording (docs/recording.md): L{None} records nothing.
    record_dir: str | None = None
    record_all: bool = False
    record_on_failure: str = "close"
    record_retention: float = 0.0
    replay_ttl: int = 600

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """
        Check C{options} (twistd txvnc's, or a worker's copy of them) and
        build the settings.

        @raise usage.UsageError: naming the option to fix.
        """
        derived = _check(options)
        given = {**options, **derived}
        return cls(
            options=MappingProxyType(given),
            run_api=not given["no-api"],
            run_proxy=not given["no-proxy"],
            listen=given["listen"],
            api_listen=given["api-listen"],
            metrics_listen=given["metrics-listen"],
            api_key_file=given["api-key-file"],
            secret_key_file=given["secret-key-file"],
            store=given["store"],
            redis_ca=given["redis-ca"],
            base_url=given["base-url"],
            consoleauth_url=given["consoleauth-url"],
            consoleauth_ca=given["consoleauth-ca"],
            web=given["web"],
            novnc=given["novnc"],
            rfb=given.get("rfb"),
            target_policy=given["target-policy"],
            allowed_origins=tuple(given["allowed-origin"]),
            allowed_unix_dirs=tuple(given["allowed-unix-dir"]),
            frame_ancestors=tuple(
                frame_ancestor(origin) for origin in given.get("frame-ancestors", ())
            ),
            trusted_proxies=parse_networks(given["trusted-proxy"]),
            limits=limits_from(given),
            token_check_timeout=given["token-check-timeout"],
            connect_timeout=given["connect-timeout"],
            purge_interval=given["purge-interval"],
            drain_timeout=given["drain-timeout"],
            revocation_poll_interval=given["revocation-poll-interval"],
            max_token_ttl=given["max-token-ttl"],
            max_auth_failures=given["max-auth-failures"],
            workers=given["workers"],
            poll_spin=given["poll-spin"],
            audit_log=given["audit-log"],
            node_name=given["node-name"] or node_name(given["listen"]),
            log_format=given["log-format"],
            access_log_polls=bool(given["access-log-polls"]),
            nova_config=given.get("nova-config"),
            nova_ignored=tuple(given.get("nova-ignored", ())),
            record_dir=given.get("record-dir"),
            record_all=bool(given.get("record-all")),
            record_on_failure=given.get("record-on-failure") or "close",
            record_retention=float(given.get("record-retention") or 0),
            replay_ttl=int(given.get("replay-ttl") or 600),
        )


def _check(config: Mapping[str, Any]) -> dict[str, Any]:
    """
    Check the options in the order a reader fixes them (what runs, then
    numbers, files, listeners, stores and keys, noVNC); the values derived
    on the way, by option name.
    """
    run_api, run_proxy = not config["no-api"], not config["no-proxy"]
    _check_roles(config, run_api, run_proxy)
    _check_listeners(config)
    _check_numbers(config)
    _check_files_and_listeners(config)
    derived: dict[str, Any] = {}
    try:
        derived["target-policy"] = TargetPolicy.parse(config["allowed-target"])
        if run_api:
            kind, path = parse_store_description(config["store"])
            if kind == "sqlite":
                _check_writable_dir(path, "the token store")
            for name, what in (
                ("api-key-file", API_KEY_FILE),
                ("secret-key-file", SECRET_KEY_FILE),
            ):
                path = config[name]
                if os.path.exists(path):
                    key_with_role(read_private_keys(path, what), ADMIN, path, what)
                else:
                    _check_writable_dir(config[name], f"the {what}")
        else:
            path = config["api-key-file"]
            key_with_role(read_private_keys(path), PROXY, path)
        if config["audit-log"] is not None:
            _check_writable_dir(config["audit-log"], "the audit log")
    except (UnknownStore, KeyFileError, PolicyError) as e:
        raise usage.UsageError(str(e)) from None
    if run_proxy:
        derived["rfb"] = rfb_config(config)
    if run_api and config["base-url"] is None:
        derived["base-url"] = default_base_url(config["listen"], "--base-url")
    if run_proxy:
        if config["consoleauth-url"] is None:
            derived["consoleauth-url"] = listener_url(
                config["api-listen"], "--consoleauth-url"
            )
        derived.update(_web(config))
    return derived


def _check_roles(config: Mapping[str, Any], run_api: bool, run_proxy: bool) -> None:
    if not (run_api or run_proxy):
        raise usage.UsageError("--no-api and --no-proxy leave nothing to run")
    if not run_api and not config["consoleauth-url"]:
        raise usage.UsageError("--no-api needs --consoleauth-url")
    if config["workers"] < 1:
        raise usage.UsageError("--workers must be at least 1")
    if not 0 <= config["poll-spin"] <= MAX_SPIN_US:
        raise usage.UsageError(f"--poll-spin must be 0 to {MAX_SPIN_US:g}")
    if config["workers"] > 1 and not run_proxy:
        raise usage.UsageError("--workers needs the proxy (not --no-proxy)")


def _check_listeners(config: Mapping[str, Any]) -> None:
    """
    Every listener and URL option, read the way start-up will read it, so a
    typo is one line naming the option instead of a traceback.
    """
    for name in ("listen", "api-listen", "metrics-listen"):
        if config[name]:
            check_listener(config[name], f"--{name}")
    if config["workers"] > 1:
        parse_tcp_listener(config["listen"])
    for name in ("consoleauth-url", "base-url"):
        if config[name]:
            check_http_url(config[name], f"--{name}")


def _check_numbers(config: Mapping[str, Any]) -> None:
    for name in _POSITIVE:
        if config[name] <= 0:
            raise usage.UsageError(f"--{name} must be positive")
    check_limits(config)


def _check_files_and_listeners(config: Mapping[str, Any]) -> None:
    for name in ("consoleauth-ca", "redis-ca"):
        ca = config[name]
        try:
            load_ca(ca)
        except OSError as e:
            raise usage.UsageError(f"--{name} {ca}: {e.strerror}") from None
        except Exception:
            raise usage.UsageError(f"--{name} {ca}: not a PEM certificate") from None
    if config["max-auth-failures"] < 0:
        raise usage.UsageError("--max-auth-failures must be 0 or more")
    try:
        parse_networks(config["trusted-proxy"])
    except ValueError as e:
        raise usage.UsageError(f"--trusted-proxy: {e}") from None
    for origin in config.get("frame-ancestors", ()):
        try:
            frame_ancestor(origin)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
    for name in ("listen", "api-listen", "metrics-listen"):
        description = config[name]
        if description and description.startswith("ssl:"):
            try:
                parts = parse_ssl_description(description)
                load_options(
                    parts["privateKey"],
                    parts["certKey"],
                    parts.get("extraCertChain"),
                )
            except TLSConfigError as e:
                raise usage.UsageError(f"--{name}: {e}") from None
    if config["log-format"] not in ("text", "json"):
        raise usage.UsageError("--log-format must be text or json")
    _check_recording(config)


def _check_recording(config: Mapping[str, Any]) -> None:
    directory = config.get("record-dir")
    if config.get("record-on-failure", "close") not in ("close", "continue"):
        raise usage.UsageError("--record-on-failure must be close or continue")
    if (config.get("record-retention") or 0) < 0:
        raise usage.UsageError("--record-retention must be 0 or more days")
    if (config.get("replay-ttl") or 600) <= 0:
        raise usage.UsageError("--replay-ttl must be positive")
    if config.get("record-all") and directory is None:
        raise usage.UsageError("--record-all needs --record-dir")
    if directory is not None and not (
        os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)
    ):
        raise usage.UsageError(
            f"--record-dir {directory}: not a writable directory"
        )


def _web(config: Mapping[str, Any]) -> dict[str, Any]:
    """
    The page's files: C{--web} or C{--novnc} checked, or noVNC found. With
    C{--web}, noVNC is only for the replay page (docs/recording.md): the
    C{--web} tree itself when it is noVNC (Debian's), else found as without
    it, if it can be.
    """
    if config["web"] is not None:
        if not os.path.isdir(config["web"]):
            raise usage.UsageError(f"--web {config['web']}: no such directory")
        if config["novnc"] is not None:
            return {}
        return {"novnc": config["web"] if is_novnc(config["web"]) else find_novnc()}
    if config["novnc"] is not None:
        if not is_novnc(config["novnc"]):
            raise usage.UsageError(f"--novnc {config['novnc']}: no core/rfb.js there")
        return {}
    novnc = find_novnc()
    if novnc is None:
        raise usage.UsageError(
            "noVNC not found: run `npm ci` in the txvnc checkout, "
            "or pass --novnc DIR or --web DIR"
        )
    return {"novnc": novnc}


def rfb_config(config: Mapping[str, Any]) -> RFBConfig:
    """
    The proxy's RFB settings from the options, the TLS files read now so a
    bad file stops start-up with a usage message.
    """
    security = config["vnc-security"]
    if security is not None and security not in SECURITY_MODES:
        raise usage.UsageError(
            "--vnc-security must be one of: " + ", ".join(SECURITY_MODES)
        )
    if config["vnc-check-hostname"] not in ("yes", "no"):
        raise usage.UsageError("--vnc-check-hostname must be yes or no")
    if config["vnc-client-key"] and not config["vnc-client-cert"]:
        raise usage.UsageError("--vnc-client-key needs --vnc-client-cert")
    tls = None
    if config["vnc-ca-cert"] or config["vnc-client-cert"]:
        try:
            tls = VNCTLSConfig(
                config["vnc-ca-cert"],
                config["vnc-client-cert"],
                config["vnc-client-key"],
                check_host=config["vnc-check-hostname"] == "yes",
            )
        except Exception as e:
            raise usage.UsageError(f"cannot load the VNC TLS files: {e}") from None
    return RFBConfig(default_security=security, tls=tls)


def _check_writable_dir(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise usage.UsageError(f"{what} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise usage.UsageError(f"{what} {path}: directory {directory} is not writable")
