"""
C{--store} descriptions: checked without opening anything (for the options
check), redacted for log lines, and turned into a store. The one place that
knows every backend.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.nova import NovaTokenStore
from txvnc.consoleauth.novadb import parse_connection, redact_connection
from txvnc.consoleauth.redis import REDIS_SCHEMES, RedisTokenStore, parse_redis_url
from txvnc.consoleauth.sqlite import SQLiteTokenStore
from txvnc.consoleauth.store import ITokenStore, UnknownStore


def redact_store_description(description: str) -> str:
    """
    A C{--store} value fit for a log line: a Redis or nova database
    password becomes C{***}.
    """
    if description.startswith(NOVA_PREFIX):
        return NOVA_PREFIX + redact_connection(description[len(NOVA_PREFIX) :])
    parts = urlsplit(description)
    if parts.scheme in REDIS_SCHEMES and parts.password:
        host = parts.hostname or ""
        netloc = f":***@{host}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return description


#: A nova cell database, by its C{[database] connection} URL.
NOVA_PREFIX = "nova:"

STORE_FORMS = (
    "memory:, sqlite:PATH or redis://HOST:PORT/DB (rediss:// for TLS), or "
    "nova:URL for a nova cell database, read-only (nova:mysql+pymysql://... "
    "or nova:sqlite:///PATH)"
)


def parse_store_description(description: str) -> tuple[str, str]:
    """
    (kind, argument) of a C{--store} value, checked without opening anything.

    @raise UnknownStore: for anything but the forms in L{STORE_FORMS}.
    """
    kind, sep, rest = description.partition(":")
    if kind == "nova" and sep:
        parse_connection(rest)
        return "nova", rest
    if sep and ((kind == "memory" and not rest) or (kind == "sqlite" and rest)):
        return kind, rest
    if kind in REDIS_SCHEMES and rest.startswith("//"):
        parse_redis_url(description)
        return "redis", description
    raise UnknownStore(f"unknown token store {description!r}: use {STORE_FORMS}")


def store_from_string(
    description: str,
    redis_ca: str | None = None,
    reactor: Any = None,
    timeout: float = 2.0,
) -> ITokenStore:
    """
    Build a store from a C{--store} value; C{redis_ca} is the PEM file a
    C{rediss://} server's certificate must chain to (default: the system's
    CAs). The nova store queries its database in threads of C{reactor}
    (the global one if L{None}) and gives up on a query after C{timeout}
    seconds.

    @raise UnknownStore: for anything else, with the accepted forms.
    """
    kind, argument = parse_store_description(description)
    if kind == "memory":
        return MemoryTokenStore()
    if kind == "redis":
        return RedisTokenStore.from_url(argument, ca_file=redis_ca)
    if kind == "nova":
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        return NovaTokenStore(parse_connection(argument), reactor, timeout=timeout)
    return SQLiteTokenStore(argument)
