"""
Endpoint strings, read in one place.

Every listener is a Twisted endpoint description (C{tcp:6080},
C{tcp6:6081:interface=\\:\\:1}, C{ssl:6443:privateKey=key.pem}, C{unix:...},
C{systemd:...}) and Twisted builds the listener from it. txvnc also has to
read some of them itself: to derive a URL from a listener (the access URLs'
base, the proxy's token API URL, the node name), to make the shared sockets
of C{--workers}, and to build C{ssl:} listeners whose certificate reloads.
L{parse_endpoint} is the one reader those share, and L{check_listener}
checks every listener with it before anything starts, so a typo is one line
naming the option rather than a traceback from deep inside start-up.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from twisted.python import usage
from twisted.python.systemd import ListenFDs


class EndpointError(usage.UsageError):
    """
    A listener description txvnc cannot use for what it was asked; the
    message names the option to change.
    """


@dataclass(frozen=True)
class Endpoint:
    """
    One description split Twisted's way: a kind, positional arguments and
    C{key=value} arguments, with C{\\:} unescaped.
    """

    kind: str
    args: tuple[str, ...] = ()
    kwargs: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> str | None:
        """
        The port, given first or as C{port=}.
        """
        return self.kwargs.get("port") or (self.args[0] if self.args else None)


def parse_endpoint(description: str) -> Endpoint:
    """
    Split C{description} at its unescaped colons.
    """
    kind, *rest = (
        p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)
    )
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in rest:
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key] = value
        else:
            args.append(part)
    return Endpoint(kind, tuple(args), kwargs)


def listener_url(description: str, option: str) -> str:
    """
    The URL a local client uses to reach a server endpoint description
    (C{tcp:6081:interface=127.0.0.1} -> C{http://127.0.0.1:6081}).

    @param option: the option that sets the URL by hand, named in errors.
    @raise EndpointError: for endpoints that are not TCP or SSL.
    """
    endpoint = parse_endpoint(description)
    scheme = {"tcp": "http", "tcp6": "http", "ssl": "https"}.get(endpoint.kind)
    host = "::1" if endpoint.kind == "tcp6" else "127.0.0.1"
    interface = endpoint.kwargs.get("interface", "")
    if interface not in ("", "0.0.0.0", "::"):
        host = interface
    port = endpoint.port
    if scheme is None or not port or not port.isdigit():
        raise EndpointError(
            f"cannot derive a URL from the listener {description!r}: set {option}"
        )
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def node_name(listen: str) -> str:
    """
    C{<hostname>:<port>} of the proxy's listener, its default node name.
    """
    try:
        port = urlsplit(listener_url(listen, "--node-name")).port
    except EndpointError:
        return socket.gethostname()
    return f"{socket.gethostname()}:{port}"


def default_base_url(listen: str, option: str) -> str:
    """
    C{http://<hostname>:<port>} for the proxy's listener.
    """
    url = urlsplit(listener_url(listen, option))
    return f"{url.scheme}://{socket.gethostname()}:{url.port}"


def parse_tcp_listener(description: str) -> tuple[int, str, int, int]:
    """
    (address family, interface, port, backlog) of a C{tcp:} or C{tcp6:}
    endpoint description, the only kinds a shared socket can be made for.

    @raise EndpointError: for any other description.
    """
    endpoint = parse_endpoint(description)
    if endpoint.kind not in ("tcp", "tcp6"):
        raise EndpointError(
            f"--workers needs a tcp: or tcp6: --listen, not {description!r}"
        )
    family = socket.AF_INET6 if endpoint.kind == "tcp6" else socket.AF_INET
    interface = endpoint.kwargs.get(
        "interface", "::" if endpoint.kind == "tcp6" else ""
    )
    port = endpoint.port
    if port is None or not port.isdigit():
        raise EndpointError(f"--listen {description!r}: no port")
    return family, interface, int(port), int(endpoint.kwargs.get("backlog", 50))


#: Makes the error for one description from what is wrong with it.
_Fail = Callable[[str], "EndpointError"]

#: What each kind of listener takes: positional arguments, then names.
_PARAMETERS = {
    "tcp": (("port",), ("port", "interface", "backlog")),
    "tcp6": (("port",), ("port", "interface", "backlog")),
    "ssl": (
        ("port",),
        ("port", "interface", "backlog", "privateKey", "certKey", "extraCertChain"),
    ),
    "unix": (("address",), ("address", "mode", "lockfile", "backlog", "wantPID")),
    "systemd": ((), ("domain", "index", "name")),
}


def check_listener(description: str, option: str) -> Endpoint:
    """
    Check a listener description the way Twisted (or txvnc, for C{ssl:})
    will read it at start-up: a known kind, known parameters, a port in
    range, an IP address as C{interface=}, an existing directory for a unix
    socket, a socket systemd really passed.

    @raise EndpointError: C{"OPTION DESCRIPTION: what is wrong"}.
    """

    def fail(why: str) -> EndpointError:
        return EndpointError(f"{option} {description}: {why}")

    endpoint = parse_endpoint(description)
    if endpoint.kind not in _PARAMETERS:
        raise fail(
            f"unknown endpoint type {endpoint.kind!r} "
            "(use tcp:, tcp6:, ssl:, unix: or systemd:)"
        )
    positional, names = _PARAMETERS[endpoint.kind]
    if len(endpoint.args) > len(positional):
        raise fail(f"unexpected {endpoint.args[len(positional)]!r}")
    for name in endpoint.kwargs:
        if name not in names:
            raise fail(
                f"unknown parameter {name!r} ({endpoint.kind}: takes "
                f"{', '.join(names)})"
            )
    for name in ("backlog", "lockfile"):
        value = endpoint.kwargs.get(name)
        if value is not None and not value.isdigit():
            raise fail(f"{name} {value!r} is not a number")
    if endpoint.kind in ("tcp", "tcp6", "ssl"):
        _check_port(endpoint, fail)
    elif endpoint.kind == "unix":
        _check_unix(endpoint, fail)
    else:
        _check_systemd(endpoint, fail)
    return endpoint


def _check_port(endpoint: Endpoint, fail: _Fail) -> None:
    port = endpoint.port
    if port is None:
        raise fail("no port")
    if not port.isdigit():
        raise fail(f"port {port!r} is not a number")
    if int(port) > 65535:
        raise fail(f"port {port} is out of range (0-65535)")
    interface = endpoint.kwargs.get("interface", "")
    if interface:
        try:
            ipaddress.ip_address(interface)
        except ValueError:
            raise fail(f"interface {interface} is not an IP address") from None


def _check_unix(endpoint: Endpoint, fail: _Fail) -> None:
    address = endpoint.kwargs.get("address") or (
        endpoint.args[0] if endpoint.args else None
    )
    if not address:
        raise fail("no socket path")
    directory = os.path.dirname(os.path.abspath(address))
    if not os.path.isdir(directory):
        raise fail(f"directory {directory} does not exist")
    mode = endpoint.kwargs.get("mode")
    if mode is not None:
        try:
            int(mode, 8)
        except ValueError:
            raise fail(f"mode {mode!r} is not an octal number") from None


def _check_systemd(endpoint: Endpoint, fail: _Fail) -> None:
    domain = endpoint.kwargs.get("domain")
    if domain not in ("INET", "INET6", "UNIX"):
        raise fail("domain= must be INET, INET6 or UNIX")
    index, name = endpoint.kwargs.get("index"), endpoint.kwargs.get("name")
    if (index is None) == (name is None):
        raise fail("give index= or name=, not both")
    passed = ListenFDs.fromEnvironment()
    if not passed.inheritedDescriptors():
        why = (
            "LISTEN_FDS is not set for this process: start txvnc from a "
            "systemd socket unit"
        )
    else:
        why = f"it passed {len(passed.inheritedDescriptors())}"
    if index is not None:
        if not index.isdigit():
            raise fail(f"index {index!r} is not a number")
        if int(index) >= len(passed.inheritedDescriptors()):
            raise fail(f"systemd passed no socket {index} ({why})")
    elif name not in passed.inheritedNamedDescriptors():
        raise fail(f"systemd passed no socket named {name!r} ({why})")


def check_http_url(url: str, option: str) -> str:
    """
    C{url} when it is an http:// or https:// URL with a host (and a port
    in range, if any).

    @raise EndpointError: C{"OPTION URL: what is wrong"}.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise EndpointError(f"{option} {url}: not an http:// or https:// URL")
    if not parts.hostname:
        raise EndpointError(f"{option} {url}: no host")
    try:
        parts.port  # noqa: B018 (checks the port's range)
    except ValueError:
        raise EndpointError(f"{option} {url}: port out of range 0-65535") from None
    return url
