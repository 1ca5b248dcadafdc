"""
What the stores keep beside tokens so revocation reaches open consoles: the
consoles each proxy reports (L{SessionRecord}) and the revocation feed the
proxies poll (L{Revocation}). See C{docs/revocation.md}.

Pure data, no I/O: the stores, the API resource and the proxy share it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from txvnc.core.tokens import iso8601

#: What a revocation names: one token (by hash), every token of an
#: instance, or one console (by session id).
REVOCATION_KINDS = ("token", "instance", "session")

#: How long the feed keeps an entry. A proxy polls every second or so; this
#: only has to outlast a proxy's outage of its token API.
REVOCATION_RETENTION = 3600.0

#: The feed keeps at most this many entries (Redis trims by count).
REVOCATION_MAX_ENTRIES = 100_000

#: Longest id, node name, instance or client text a report may carry.
MAX_FIELD_LENGTH = 255
#: Times a report may carry: the epoch to the end of year 9999.
MAX_TIMESTAMP = 253402300799.0


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
        A record from its JSON object, strictly typed.

        @raise ValueError: naming what is missing, unknown or wrong.
        """
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ValueError(f"bad session record: unknown field {unknown[0][:40]!r}")
        try:
            instance_uuid = data.get("instance_uuid")
            record = cls(
                id=_text(data["id"]),
                node=_text(data["node"]),
                instance_uuid=None if instance_uuid is None else _text(instance_uuid),
                token_hash=_text(data["token_hash"]),
                client=_text(data.get("client", "-")),
                host=_text(data["host"]),
                port=_integer(data["port"]),
                opened_at=_number(data["opened_at"]),
                bytes_to_vnc=_integer(data.get("bytes_to_vnc", 0)),
                bytes_from_vnc=_integer(data.get("bytes_from_vnc", 0)),
            )
        except KeyError as e:
            raise ValueError(f"bad session record: missing {e.args[0]}") from None
        except TypeError as e:
            raise ValueError(f"bad session record: {e}") from None
        texts = [record.id, record.node, record.client, record.host, record.token_hash]
        if record.instance_uuid is not None:
            texts.append(record.instance_uuid)
        if not record.id or not record.node:
            raise ValueError("bad session record: empty id or node")
        if any(len(t) > MAX_FIELD_LENGTH for t in texts):
            raise ValueError(f"bad session record: a field over {MAX_FIELD_LENGTH}")
        if not (
            math.isfinite(record.opened_at) and 0 <= record.opened_at <= MAX_TIMESTAMP
        ):
            raise ValueError("bad session record: opened_at out of range")
        if not 0 <= record.port <= 65535:
            raise ValueError("bad session record: port out of range")
        if record.bytes_to_vnc < 0 or record.bytes_from_vnc < 0:
            raise ValueError("bad session record: negative byte count")
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


_FIELDS = {f.name for f in dataclasses.fields(SessionRecord)}


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a text field is not a string")
    return value


def _integer(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("a count or port is not an integer")
    return value


def _number(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError("opened_at is not a number")
    return float(value)


def sessions_to_json(sessions: list[SessionRecord]) -> str:
    return json.dumps([s.to_dict() for s in sessions], sort_keys=True)


def sessions_from_json(text: str | bytes) -> list[SessionRecord]:
    return [SessionRecord.from_dict(d) for d in json.loads(text)]


def session_to_json(session: SessionRecord) -> str:
    return json.dumps(session.to_dict(), sort_keys=True)


def session_from_json(text: str | bytes) -> SessionRecord:
    return SessionRecord.from_dict(json.loads(text))
