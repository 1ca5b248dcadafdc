"""
Target policy: which VNC servers a console token may point at, by address
and port (L{TargetPolicy}) or, for libvirt's per-domain unix sockets, by
directory (L{unix_path_allowed}, C{--allowed-unix-dir}).

A token API that mints tokens for any host and port is a way into every port
of the cloud's network, so both the API (when minting) and the proxy (before
connecting) ask L{TargetPolicy.allows}. A rule is C{ADDRESS[/BITS]:PORTS} or
C{HOSTNAME:PORTS}, with C{PORTS} a port or a range C{LOW-HIGH}; IPv6 networks
are written in brackets (C{[fd00::/8]:5900-5999}). A host name matches only
itself (case aside): C{10.0.0.0/8} does not let a name that resolves into it
through, so what a token names is what the policy judged.

Pure: no I/O, no DNS.
"""

from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Where consoles live unless the operator says otherwise: loopback and the
#: private ranges, on the ports VNC servers use (5900 + display, 0-1099).
DEFAULT_PORTS = "5900-6999"
DEFAULT_RULES = (
    f"127.0.0.0/8:{DEFAULT_PORTS}",
    f"[::1/128]:{DEFAULT_PORTS}",
    f"localhost:{DEFAULT_PORTS}",
    f"10.0.0.0/8:{DEFAULT_PORTS}",
    f"172.16.0.0/12:{DEFAULT_PORTS}",
    f"192.168.0.0/16:{DEFAULT_PORTS}",
    f"[fc00::/7]:{DEFAULT_PORTS}",
)


class PolicyError(ValueError):
    """
    A rule that cannot be parsed; the message says why.
    """


@dataclass(frozen=True)
class TargetRule:
    """
    One C{--allowed-target}: a network or a host name, and a port range.
    """

    network: IPNetwork | None
    hostname: str | None
    low: int
    high: int

    def matches(self, host: str, port: int) -> bool:
        if not self.low <= port <= self.high:
            return False
        address = _address(host)
        if address is not None:
            return self.network is not None and address in self.network
        return self.hostname is not None and host.lower().rstrip(".") == self.hostname

    def __str__(self) -> str:
        where = str(self.network) if self.network is not None else self.hostname
        if self.network is not None and self.network.version == 6:
            where = f"[{where}]"
        ports = str(self.low) if self.low == self.high else f"{self.low}-{self.high}"
        return f"{where}:{ports}"


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _ports(text: str, rule: str) -> tuple[int, int]:
    low_text, dash, high_text = text.partition("-")
    if not dash:
        high_text = low_text
    if not (low_text.isdigit() and high_text.isdigit()):
        raise PolicyError(f"target rule {rule!r}: ports must be N or LOW-HIGH")
    low, high = int(low_text), int(high_text)
    if not 1 <= low <= high <= 65535:
        raise PolicyError(f"target rule {rule!r}: ports must be 1-65535, low first")
    return low, high


def parse_rule(rule: str) -> TargetRule:
    """
    One rule from its text.

    @raise PolicyError: naming the rule and what is wrong with it.
    """
    text = rule.strip()
    if text.startswith("["):
        where, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise PolicyError(f"target rule {rule!r}: use [IPV6/BITS]:PORTS")
        ports = rest[1:]
    else:
        where, colon, ports = text.rpartition(":")
        if not colon or not where:
            raise PolicyError(f"target rule {rule!r}: use HOST:PORTS or CIDR:PORTS")
        if ":" in where:
            raise PolicyError(f"target rule {rule!r}: write IPv6 in brackets")
    low, high = _ports(ports, rule)
    try:
        network = ipaddress.ip_network(where, strict=False)
    except ValueError:
        if "/" in where or not where or any(c in where for c in " @/?#"):
            raise PolicyError(
                f"target rule {rule!r}: not a network or host name"
            ) from None
        return TargetRule(None, where.lower().rstrip("."), low, high)
    return TargetRule(network, None, low, high)


@dataclass(frozen=True)
class TargetPolicy:
    """
    A set of rules; a target is allowed when any rule matches it.
    """

    rules: tuple[TargetRule, ...]

    @classmethod
    def parse(cls, rules: list[str] | tuple[str, ...]) -> TargetPolicy:
        """
        The policy of C{--allowed-target} values, or the default when none.
        """
        return cls(tuple(parse_rule(r) for r in (rules or DEFAULT_RULES)))

    @classmethod
    def allow_all(cls) -> TargetPolicy:
        """
        Every host and port: for tests of other things, never a default.
        """
        return cls(
            (
                TargetRule(ipaddress.ip_network("0.0.0.0/0"), None, 1, 65535),
                TargetRule(ipaddress.ip_network("::/0"), None, 1, 65535),
            )
        )

    def allows(self, host: str, port: int) -> bool:
        return any(rule.matches(host, port) for rule in self.rules)

    def __str__(self) -> str:
        return ", ".join(str(r) for r in self.rules)

def unix_path_allowed(path: str, allowed_dirs: tuple[str, ...]) -> bool:
    """
    Whether C{path} is an absolute, normalised path inside one of
    C{allowed_dirs}; no directory allowed means no unix target.
    """
    if not path.startswith("/") or posixpath.normpath(path) != path:
        return False
    for directory in allowed_dirs:
        directory = posixpath.normpath(directory)
        if path.startswith(directory.rstrip("/") + "/"):
            return True
    return False
