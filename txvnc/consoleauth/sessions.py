"""
What the stores keep beside tokens so revocation reaches open consoles: the
consoles each proxy reports (L{SessionRecord}) and the revocation feed the
proxies poll (L{Revocation}). See C{docs/revocation.md}.

Pure data, no I/O: the stores, the API resource and the proxy share it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from txvnc.consoleauth.tokens import iso8601

#: What a revocation names: one token (by hash), every token of an
#: instance, or one console (by session id).
REVOCATION_KINDS = ("token", "instance", "session")

#: How long the feed keeps an entry. A proxy polls every second or so; this
#: only has to outlast a proxy's outage of its token API.
REVOCATION_RETENTION = 3600.0

#: The feed keeps at most this many entries (Redis trims by count).
REVOCATION_MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class Revocation:
    """
    One entry of the revocation feed, numbered in the order it was added.
    """

    seq: int
    kind: str
    value: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class SessionRecord:
    """
    One open console, as the proxy that holds it reports it.

    @ivar token_hash: the SHA-256 of the token that opened it, so revoking
        the token finds it; never shown by the API.
    """

    id: str
    node: str
    instance_uuid: str | None
    token_hash: str
    client: str
    host: str
    port: int
    opened_at: float
    bytes_to_vnc: int = 0
    bytes_from_vnc: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionRecord:
        """
        A record from its JSON object; unknown keys are dropped.

        @raise ValueError: when a field is missing or of the wrong type.
        """
        try:
            record = cls(
                id=str(data["id"]),
                node=str(data["node"]),
                instance_uuid=(
                    None
                    if data.get("instance_uuid") is None
                    else str(data["instance_uuid"])
                ),
                token_hash=str(data["token_hash"]),
                client=str(data.get("client", "-")),
                host=str(data["host"]),
                port=int(data["port"]),
                opened_at=float(data["opened_at"]),
                bytes_to_vnc=int(data.get("bytes_to_vnc", 0)),
                bytes_from_vnc=int(data.get("bytes_from_vnc", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad session record: {e}") from None
        if not record.id or not record.node:
            raise ValueError("bad session record: empty id or node")
        return record

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def public(self) -> dict[str, Any]:
        """
        What C{GET /v1/sessions} shows of a console.
        """
        return {
            "id": self.id,
            "proxy": self.node,
            "instance_uuid": self.instance_uuid,
            "client": self.client,
            "target": f"{self.host}:{self.port}",
            "opened_at": iso8601(self.opened_at),
            "bytes_to_vnc": self.bytes_to_vnc,
            "bytes_from_vnc": self.bytes_from_vnc,
        }


def sessions_to_json(sessions: list[SessionRecord]) -> str:
    return json.dumps([s.to_dict() for s in sessions], sort_keys=True)


def sessions_from_json(text: str | bytes) -> list[SessionRecord]:
    return [SessionRecord.from_dict(d) for d in json.loads(text)]
