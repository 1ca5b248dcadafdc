"""
C{txvnc recording list|show|download|replay|delete}: console recordings
through the token API (admin key; docs/recording.md), and the recording
flags of C{txvnc console create}.

The C{txvnc} command (L{txvnc.cli}) mounts these; each command here answers
what to show as plain data (fields and headers, records), which the
command prints in the format asked for.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import quote

from txvnc.client import ConsoleAuthClient

#: What C{recording list} shows of each recording (C{-f json}: every field).
LIST_COLUMNS = [
    ("id", "Id"),
    ("instance_uuid", "Instance"),
    ("target", "Target"),
    ("node", "Node"),
    ("started_at", "Started"),
    ("last_written_at", "Last written"),
    ("size", "Bytes"),
]
SHOW_COLUMNS = [*LIST_COLUMNS, ("token_hash", "Token hash"), ("input", "Input")]


@dataclass
class Shown:
    """What a recording command shows: fields with headers, and records."""

    columns: list[tuple[str, str]]
    records: list[dict[str, Any]] = field(default_factory=list)
    single: bool = False
    message: str | None = None


def add_record_flags(create: argparse.ArgumentParser) -> None:
    """C{console create}'s recording flags."""
    group = create.add_argument_group("recording (docs/recording.md)")
    group.add_argument(
        "--record",
        action="store_true",
        default=None,
        help="record the console (the proxy needs --record-dir)",
    )
    group.add_argument(
        "--record-input",
        action="store_true",
        default=None,
        help="also record keys and pointer (may hold passwords)",
    )
    group.add_argument(
        "--record-clipboard",
        action="store_true",
        default=None,
        help="also record clipboard text sent to the machine",
    )


def record_options(args: argparse.Namespace) -> dict[str, Any]:
    """The recording fields of a mint, from C{console create}'s flags."""
    return {
        "record": args.record,
        "record_input": args.record_input,
        "record_clipboard": args.record_clipboard,
    }


def add_to(
    top: Any, output: argparse.ArgumentParser, create: argparse.ArgumentParser
) -> None:
    """Add C{txvnc recording ...} and C{console create}'s recording flags."""
    add_record_flags(create)
    recording = top.add_parser("recording", help="console recordings")
    sub = recording.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="list recordings", parents=[output])
    listing.add_argument("--instance-uuid", help="only this instance's recordings")
    listing.add_argument("--since", help="written since (ISO 8601 or POSIX seconds)")
    listing.add_argument("--until", help="started until (ISO 8601 or POSIX seconds)")
    show = sub.add_parser("show", help="one recording's metadata", parents=[output])
    show.add_argument("recording_id")
    download = sub.add_parser(
        "download", help="save a recording's file", parents=[output]
    )
    download.add_argument("recording_id")
    download.add_argument(
        "-o", "--output", help="file to write [default: ID.txrec here]"
    )
    replay = sub.add_parser(
        "replay", help="a short-lived URL that replays it", parents=[output]
    )
    replay.add_argument("recording_id")
    delete = sub.add_parser("delete", help="delete a recording", parents=[output])
    delete.add_argument("recording_id")


async def command(
    client: ConsoleAuthClient, args: argparse.Namespace, err: TextIO
) -> Shown:
    """Run C{txvnc recording ACTION}; what to show."""
    if args.action == "list":
        query = {"instance_uuid": args.instance_uuid, "since": args.since}
        query["until"] = args.until
        given = "&".join(
            f"{k}={quote(v, safe='')}" for k, v in query.items() if v is not None
        )
        path = "/v1/recordings" + ("?" + given if given else "")
        found = await client.expect("GET", path)
        return Shown(LIST_COLUMNS, list(found["recordings"]))
    one = "/v1/recordings/" + quote(args.recording_id, safe="")
    if args.action == "show":
        return Shown(SHOW_COLUMNS, [await client.expect("GET", one)], True)
    if args.action == "download":
        data = await client.expect("GET", one + "/file", raw=True)
        path = args.output or f"{args.recording_id}.txrec"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        done = {"id": args.recording_id, "file": path, "size": len(data)}
        return Shown(
            [("id", "Id"), ("file", "File"), ("size", "Bytes")],
            [done],
            True,
            f"Recording {args.recording_id} saved to {path} ({len(data)} bytes).",
        )
    if args.action == "replay":
        answer = await client.expect("POST", one + "/replay", 201)
        return Shown(
            [("replay_url", "Url"), ("expires_at", "Expires")], [answer], True
        )
    await client.expect("DELETE", one, 204)
    return Shown(
        [("id", "Id"), ("deleted", "Deleted")],
        [{"id": args.recording_id, "deleted": True}],
        True,
        f"Recording {args.recording_id} deleted.",
    )
