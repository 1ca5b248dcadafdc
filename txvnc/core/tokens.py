"""
How a token is named once it has been minted: by its SHA-256, which the
stores key on, and by a short prefix of that hash, which log lines use.
Both halves need these (the API to store and look up, the proxy to log and
count), so they live here rather than in either half.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime


def token_hash(token: str) -> str:
    """
    The SHA-256 of a token, hex. Stores key on this, never on the token, so a
    copy of the database grants no console.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_ref(token: str) -> str:
    """
    A short, non-reversible name for a token, fit for log lines.
    """
    return token_hash(token)[:12]


def iso8601(timestamp: float) -> str:
    """
    A POSIX time as ISO 8601 UTC with a Z, the form every API answer uses.
    """
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
