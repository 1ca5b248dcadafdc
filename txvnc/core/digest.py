"""
The digest of a proxy's set of open consoles, which the proxy and the token
API compute alike so that a proxy can send only what changed and both sides
still notice when they disagree.

It is a count and a sum of one 40-bit number per console id (the first
five bytes of the id's SHA-256): order does not matter, and adding or
removing one console changes it in constant time on either side, in a
store too (Redis adds and subtracts integers in a script; 40-bit terms
leave room for millions of consoles in a signed 64-bit sum).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def digest_term(console_id: str) -> int:
    """One console's share of the digest."""
    digest = hashlib.sha256(console_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:5], "big")


def format_digest(count: int, total: int) -> str:
    """The digest as both sides send and compare it."""
    return f"{count}-{total:x}"


def digest_of(console_ids: Iterable[str]) -> str:
    """The digest of a whole set of console ids (tests, a full report)."""
    count = total = 0
    for console_id in console_ids:
        count += 1
        total += digest_term(console_id)
    return format_digest(count, total)


class RunningDigest:
    """A set's digest kept up to date as ids come and go."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def add(self, console_id: str) -> None:
        self.count += 1
        self.total += digest_term(console_id)

    def remove(self, console_id: str) -> None:
        self.count -= 1
        self.total -= digest_term(console_id)

    def __str__(self) -> str:
        return format_digest(self.count, self.total)
