"""
Endpoint strings, read in one place.

Every listener is a Twisted endpoint description (C{tcp:6080},
C{tcp6:6081:interface=\\:\\:1}, C{ssl:6443:privateKey=key.pem}, C{unix:...},
C{systemd:...}) and Twisted builds the listener from it. txvnc also has to
read some of them itself: to derive a URL from a listener (the access URLs'
base, the proxy's token API URL, the node name), to make the shared sockets
of C{--workers}, and to build C{ssl:} listeners whose certificate reloads.
L{parse_endpoint} is the one reader those share.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from twisted.python import usage


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
