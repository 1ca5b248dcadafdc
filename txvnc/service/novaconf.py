"""
C{--nova-config /etc/nova/nova.conf}: a cell's nova-novncproxy settings as
txvnc options, so txvnc replaces nova-novncproxy with nothing changed in
nova.

nova.conf is oslo.config's INI syntax (sections, C{key = value}, C{#}
comments, lists as C{a,b}), read here with L{configparser}. What is read:

    [vnc]         novncproxy_host, novncproxy_port  -> --listen
                  novncproxy_base_url               -> --base-url (scheme, host)
                  auth_schemes                      -> --vnc-security vencrypt
                                                       (none: relayed untouched)
                  vencrypt_ca_certs, vencrypt_client_cert, vencrypt_client_key
                                                    -> --vnc-ca-cert, ...
    [console]     allowed_origins                   -> --allowed-origin
    [DEFAULT]     ssl_only, cert, key               -> an ssl: --listen
    [database]    connection                        -> --store nova:URL
    [DEFAULT]     record (a file name prefix)       -> --record-dir (its
                                                       directory), --record-all
    [consoleauth] enforce_session_timeout           -> --end-at-token-expiry yes

The values become options before the TOML file and the command line are
read, so both win over nova.conf. An option a proxy would honour in nova
but txvnc does not is named in L{NovaConfig.ignored}, which the assembly
logs once at start (for instance C{[DEFAULT] web}:
txvnc serves its own page at nova's access URLs).
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from twisted.python import usage

#: nova's defaults for what is read (nova/conf/vnc.py, nova/conf/novnc.py).
_DEFAULT_HOST = "0.0.0.0"
_DEFAULT_PORT = 6080
_DEFAULT_CERT = "self.pem"

#: Options a nova-novncproxy honours that txvnc does not, with why.
_NOT_HONOURED = {
    ("DEFAULT", "web"): (
        "txvnc serves its own page at nova's access URLs (vnc_lite.html, "
        "vnc_auto.html); give --web to serve that tree instead"
    ),
    ("DEFAULT", "daemon"): "twistd daemonizes (or not) by its own options",
    ("DEFAULT", "source_is_ipv6"): "txvnc listens where [vnc] novncproxy_host says",
    ("console", "ssl_ciphers"): (
        "txvnc's TLS listener offers its own cipher list (TLS 1.2 AEAD and "
        "TLS 1.3)"
    ),
    ("console", "ssl_minimum_version"): (
        "txvnc's TLS listener requires TLS 1.2 at least"
    ),
}


@dataclass
class NovaConfig:
    """
    txvnc option values by long option name, and what was not honoured.
    """

    values: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _endpoint_host(host: str) -> str:
    return host.replace(":", "\\:")


def read_nova_config(path: str) -> NovaConfig:
    """
    The txvnc options a nova.conf gives.

    @raise usage.UsageError: when the file cannot be read or parsed, or
        names values txvnc cannot use (a bad port, an unknown auth scheme).
    """
    # [DEFAULT] read as a section like any other: in configparser its
    # values show through every section, in oslo.config they do not.
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, default_section="txvnc:none"
    )
    where = f"--nova-config {path}"
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise usage.UsageError(f"{where}: {e.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as e:
        raise usage.UsageError(f"{where}: not a nova.conf: {e}") from None

    def get(section: str, name: str) -> str | None:
        value = parser.get(section, name, fallback=None)
        return None if value is None or value.strip() == "" else value.strip()

    config = NovaConfig()
    values = config.values
    host = get("vnc", "novncproxy_host") or _DEFAULT_HOST
    port_text = get("vnc", "novncproxy_port") or str(_DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise usage.UsageError(f"{where}: [vnc] novncproxy_port {port_text!r}")
    listen = f"{port_text}:interface={_endpoint_host(host)}"
    cert = get("DEFAULT", "cert") or _DEFAULT_CERT
    key = get("DEFAULT", "key")
    if _bool(get("DEFAULT", "ssl_only") or "false"):
        values["listen"] = f"ssl:{listen}:certKey={cert}:privateKey={key or cert}"
    else:
        values["listen"] = f"tcp:{listen}"
        if get("DEFAULT", "cert") is not None:
            config.ignored.append(
                "[DEFAULT] cert without ssl_only: nova-novncproxy takes TLS and "
                "plain HTTP on one port, txvnc plain HTTP only (set ssl_only)"
            )

    base_url = get("vnc", "novncproxy_base_url")
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            values["base-url"] = f"{parts.scheme}://{parts.netloc}"

    schemes = _list(get("vnc", "auth_schemes") or "none")
    for scheme in schemes:
        if scheme not in ("none", "vencrypt"):
            raise usage.UsageError(f"{where}: [vnc] auth_schemes: unknown {scheme!r}")
    # nova's "none" negotiates None with the compute and offers the browser
    # None; txvnc relays the RFB handshake untouched instead, which for a
    # compute without VNC security (all nova configures then) is the same.
    if schemes[0] == "vencrypt":
        values["vnc-security"] = "vencrypt"
    if len(schemes) > 1:
        config.ignored.append(
            f"[vnc] auth_schemes after {schemes[0]}: txvnc uses the first only"
        )
    # nova checks that a compute's certificate chains to its CA, not which
    # host it names: the token's host is often an address the certificate
    # does not carry.
    values["vnc-check-hostname"] = "no"
    for nova_name, option in (
        ("vencrypt_ca_certs", "vnc-ca-cert"),
        ("vencrypt_client_cert", "vnc-client-cert"),
        ("vencrypt_client_key", "vnc-client-key"),
    ):
        value = get("vnc", nova_name)
        if value is not None:
            values[option] = value

    origins = _list(get("console", "allowed_origins") or "")
    if origins:
        values["allowed-origin"] = origins

    if _bool(get("consoleauth", "enforce_session_timeout") or "false"):
        values["end-at-token-expiry"] = "yes"

    connection = get("database", "connection")
    if connection is None:
        raise usage.UsageError(
            f"{where}: no [database] connection: txvnc reads nova's tokens there"
        )
    values["store"] = "nova:" + connection

    _record(config, get("DEFAULT", "record"))

    for (section, name), why in _NOT_HONOURED.items():
        value = get(section, name)
        if value is None:
            continue
        if name in ("daemon", "source_is_ipv6") and (
            not _bool(value)
        ):
            continue
        config.ignored.append(f"[{section}] {name}: {why}")
    return config


def _record(config: NovaConfig, record: str | None) -> None:
    """
    nova's C{[DEFAULT] record} (websockify's raw frames, to files named
    C{RECORD.N}): every console recorded, txvnc's way (docs/recording.md),
    into the directory of that name, when it is there to write to.
    """
    if record is None or record.lower() in ("false", "0", "no", "off"):
        return
    directory = os.path.dirname(os.path.abspath(record))
    if record.lower() in ("true", "1", "yes", "on") or not (
        os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)
    ):
        config.ignored.append(
            f"[DEFAULT] record: no writable directory in {record!r}; "
            "give --record-dir to record consoles"
        )
        return
    config.values["record-dir"] = directory
    config.values["record-all"] = True


def nova_config_path(argv: list[str]) -> str | None:
    """
    The file named by C{--nova-config FILE} or C{--nova-config=FILE}.
    """
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--nova-config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--nova-config="):
            return arg.partition("=")[2]
    return None
