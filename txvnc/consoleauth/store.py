"""
Token stores: where minted tokens live until they expire or are revoked,
with the revocation feed and the open-console registry beside them.

A store only ever sees a token's SHA-256 (L{TokenRecord.token_hash}), so a
leaked database or Redis dump opens no console. Time is always passed in
(C{now}) rather than read here, so expiry is tested with a
L{twisted.internet.task.Clock} and the same answer holds on every node.

This module is the contract (L{ITokenStore}) and its errors. Each backend
has a module of its own: L{txvnc.consoleauth.memory},
L{txvnc.consoleauth.sqlite} (the default) and L{txvnc.consoleauth.redis};
all pass the one contract suite in C{tests/consoleauth/test_store.py}.
L{txvnc.consoleauth.stores} builds one from a C{--store} description.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from txvnc.consoleauth.sessions import (
    Revocation,
    SessionRecord,
)
from txvnc.consoleauth.tokens import TokenRecord


class ITokenStore(Interface):
    """
    The storage contract every backend meets; the shared contract tests in
    C{tests/consoleauth/test_store.py} run against each implementation.
    """

    def add(record: TokenRecord) -> Deferred[None]:
        """
        Remember C{record} until it expires or is removed.
        """

    def get(token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        """
        The live record for C{token_hash}, or L{None} when it is unknown or
        expired at C{now} (callers cannot tell the two apart, by design).
        Never consumes a single-use token.
        """

    def use(token_hash: str, now: float) -> Deferred[TokenRecord | None]:
        """
        Like L{get}, for a console about to open: a single-use record is
        removed in the same atomic step that returns it, so of any number
        of concurrent callers, on any number of nodes, exactly one gets it.
        """

    def list_tokens(
        instance_uuid: str | None, now: float
    ) -> Deferred[list[TokenRecord]]:
        """
        The live records, of one instance or of all, oldest first.
        """

    def remove(token_hash: str) -> Deferred[bool]:
        """
        Forget one token; fires with whether it existed.
        """

    def remove_instance(instance_uuid: str) -> Deferred[int]:
        """
        Forget every token of an instance; fires with how many there were.
        """

    def add_revocation(kind: str, value: str, now: float) -> Deferred[int]:
        """
        Append to the revocation feed; fires with the entry's number, larger
        than every number before it.
        """

    def revocations(after: int) -> Deferred[tuple[int, list[Revocation]]]:
        """
        The feed's latest number and its entries numbered above C{after},
        oldest first.
        """

    def revocation_cursor() -> Deferred[int]:
        """
        The feed's latest number (0 before the first entry).
        """

    def put_sessions(
        node: str, sessions: list[SessionRecord], now: float, ttl: float
    ) -> Deferred[None]:
        """
        Replace what proxy C{node} reported; it is forgotten C{ttl} seconds
        after C{now} unless reported again (a dead proxy's consoles vanish).
        """

    def update_sessions(
        node: str,
        added: list[SessionRecord],
        removed: list[str],
        now: float,
        ttl: float,
    ) -> Deferred[str | None]:
        """
        Apply what changed since proxy C{node}'s last report (consoles
        C{added}, console ids C{removed}) and keep the report C{ttl}
        seconds from C{now}; work in proportion to the changes, not to the
        consoles held. Fires with the digest (L{txvnc.core.digest}) of the
        consoles now held for C{node}, or L{None}, changing nothing, when
        no live report of C{node} is held (the proxy must send it all).
        """

    def sessions(now: float) -> Deferred[list[SessionRecord]]:
        """
        Every console reported by a proxy whose report is still live.
        """

    def purge(now: float) -> Deferred[int]:
        """
        Drop records that expired before C{now}; fires with how many tokens.
        """

    def close() -> Deferred[None]:
        """
        Release connections; the store is unusable afterwards.
        """


class StoreUnavailable(Exception):
    """
    The store could not be reached (Redis down, connection lost): an
    operational condition the API answers with 503, not a bug.
    """


class ReadOnlyStore(Exception):
    """
    A write to a store whose tokens another system owns (the nova store:
    nova mints and revokes them); the API answers 405 with the message.
    """


class UnknownStore(ValueError):
    """
    A C{--store} description that names no backend.
    """
