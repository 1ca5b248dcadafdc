"""
The token API's side of console recordings: the shared recordings
directory, read off the reactor thread, and replay links.

A replay link names its recording and its expiry, signed with a key
derived from the secret key file (C{--secret-key-file}, which every API
node of a deployment shares, as it must for VNC passwords): any API node
can check a link any other made, and nothing is stored. The link grants
one thing, watching one recording until it expires; the proxy serving the
replay page asks the API about it (C{GET /v1/replays/{token}}).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from txvnc.consoleauth.secretbox import SecretBox
from txvnc.core.recfile import valid_id
from txvnc.core.recordings import RecordingDirectory

T = TypeVar("T")

#: How long a replay link lives unless --replay-ttl says otherwise.
DEFAULT_REPLAY_TTL = 600
_MAC_BYTES = 24


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ReplayLinks:
    """
    Makes and checks replay tokens: C{PAYLOAD.MAC}, the payload naming the
    recording and the expiry (POSIX seconds).
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_secrets(cls, box: SecretBox | None) -> ReplayLinks:
        """Keyed from the secret key file; a random key without one."""
        if box is None:
            return cls(secrets.token_bytes(32))
        return cls(box.derive("replay links"))

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode("ascii"), hashlib.sha256)
        return _b64(digest.digest()[:_MAC_BYTES])

    def make(self, recording_id: str, expires_at: int) -> str:
        payload = _b64(
            json.dumps({"r": recording_id, "e": expires_at}, separators=(",", ":"))
            .encode("utf-8")
        )
        return f"{payload}.{self._mac(payload)}"

    def check(self, token: str, now: float) -> tuple[str, int] | None:
        """The recording id and expiry of a good, live token, else L{None}."""
        if not token.isascii():
            return None
        payload, _, mac = token.partition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            recording_id, expires_at = str(data["r"]), int(data["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if now >= expires_at or not valid_id(recording_id):
            return None
        return recording_id, expires_at


class RecordingArchive:
    """
    What the recording routes use: the directory (C{--record-dir}), the
    replay links and their life (C{--replay-ttl}), and a way to run disk
    reads off the reactor thread.

    @param reactor: its thread pool runs the disk reads; L{None} runs them
        at once (tests on a L{Clock}).
    """

    def __init__(
        self,
        directory: str,
        links: ReplayLinks,
        replay_ttl: int = DEFAULT_REPLAY_TTL,
        reactor: Any = None,
    ) -> None:
        self.directory = RecordingDirectory(directory)
        self.links = links
        self.replay_ttl = replay_ttl
        self._reactor = reactor

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """C{f(*args)} in a thread; its result."""
        if self._reactor is None:
            return succeed(f(*args))
        pool = self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, f, *args)

