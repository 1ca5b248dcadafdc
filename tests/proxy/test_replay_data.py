"""
The replay page's data on the proxy (txvnc.proxy.replay): a recording is
streamed to the page a chunk at a time as it is read, made replayable
(its handshake replaced), the same bytes as reading it whole would give;
what cannot be played is refused before anything is sent.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.defer import maybeDeferred
from twisted.web.server import Request

from txvnc.core.recfile import (
    HEADER,
    INPUT,
    MAGIC,
    SERVER,
    RecordEncoder,
    RecordingHeader,
    frame,
    read_file,
)
from txvnc.proxy.replay import CHUNK, ReplayResource, ReplayStream
from txvnc.rfb.replay import replayable

RID = "20261206T112233Z-node-req-1"
PIXEL_FORMAT = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
SERVER_INIT = struct.pack("!HH", 640, 480) + PIXEL_FORMAT + struct.pack("!I", 4) + b"test"
HANDSHAKE = b"RFB 003.008\n\x01\x02" + b"C" * 16 + b"\0\0\0\0"


def write(path: Path, records: list[tuple[int, int, bytes]]) -> None:
    header = RecordingHeader(
        id=RID, node="node", console_id="req-1", instance_uuid="i", target="t",
        token_hash=None, started_at=1_796_556_153.0, input=True,
    )  # fmt: skip
    encoder = RecordEncoder()
    with open(path, "wb") as f:
        f.write(encoder.start(header))
        for i in range(0, len(records), 8):
            f.write(encoder.batch(records[i : i + 8]))
        f.write(encoder.finish())


def whole(path: Path) -> bytes:
    """The replay stream as the proxy made it before it streamed: the whole file read, then framed."""
    recording = read_file(str(path))
    chunks = iter(replayable([d for k, _, d in recording.records if k == SERVER]))
    out = [MAGIC, frame(HEADER, 0, recording.header.to_bytes())]
    for kind, ms, data in recording.records:
        if kind == SERVER:
            data = next(chunks)
            if not data:
                continue
        out.append(frame(kind, ms, data))
    return b"".join(out)


def big_recording(path: Path) -> None:
    """A VNC-authenticated handshake in small reads, then 24 MiB of screen and some keys."""
    records = [(SERVER, i, HANDSHAKE[i * 7 : i * 7 + 7]) for i in range(len(HANDSHAKE) // 7 + 1)]
    records.append((SERVER, 10, SERVER_INIT))
    for i in range(384):
        records.append((SERVER, 20 + i, os.urandom(64 * 1024)))
        if i % 50 == 0:
            records.append((INPUT, 20 + i, b"\x04\x01\0\0\0\0\0a"))
    write(path, records)


def test_the_stream_is_made_a_chunk_at_a_time_and_matches_the_whole(tmp_path: Path) -> None:
    """A 24 MiB recording comes out in chunks of about CHUNK (one record more at most), and they join to what reading it whole gives."""
    path = tmp_path / "r.txrec"
    big_recording(path)
    assert path.stat().st_size > 300 * CHUNK
    stream = ReplayStream(str(path))
    chunks = list(stream)
    assert max(map(len, chunks)) <= CHUNK + 64 * 1024 + 9
    assert len(chunks) > 300
    assert b"".join(chunks) == whole(path)


def test_what_cannot_be_played_is_refused_before_anything_is_read_on(tmp_path: Path) -> None:
    """A recording whose handshake cannot be seen through raises from the constructor: a 422 before any byte is sent."""
    from txvnc.rfb.replay import NotReplayable

    path = tmp_path / "r.txrec"
    write(path, [(SERVER, 0, b"RFB 003.008\n\x01\x13" + b"\x00\x02" * 10), (SERVER, 1, b"x" * 100)])
    with pytest.raises(NotReplayable):
        ReplayStream(str(path))


class Auth:
    """The token API's answer about a replay token: this recording."""

    async def call(self, method: str, path: str) -> tuple[int, Any]:
        return 200, {"recording_id": RID}


@pytest_twisted.ensureDeferred
async def test_replay_data_is_served_complete_a_chunk_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /replay-data answers the whole replay stream of a 24 MiB recording, handed to the transport a chunk at a time, never whole."""
    big_recording(tmp_path / f"{RID}.txrec")
    writes: list[int] = []
    write_ = Request.write

    def spy(self: Request, data: bytes) -> None:
        writes.append(len(data))
        write_(self, data)

    monkeypatch.setattr(Request, "write", spy)
    http = StubTreq(ReplayResource(Auth(), str(tmp_path), None, run=maybeDeferred))  # type: ignore[arg-type]
    response = await http.get("http://proxy.test/replay-data?token=t")
    assert response.code == 200
    content = await response.content()
    assert content == whole(tmp_path / f"{RID}.txrec")
    assert max(writes) <= CHUNK + 64 * 1024 + 9 and len(writes) > 300
