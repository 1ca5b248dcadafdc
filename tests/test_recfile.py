"""
The recording file format (txvnc.core.recfile, docs/recording.md): what is
written reads back, a file cut anywhere reads up to its last complete
record, and gzip tools read it too.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest

from txvnc.core.recfile import (
    END,
    INPUT,
    MAGIC,
    SERVER,
    NotARecording,
    RecordEncoder,
    RecordingHeader,
    inflate,
    parse,
    read_file,
    read_header,
    recording_id,
    valid_id,
)
from txvnc.core.recordings import RecordingDirectory

HEADER = RecordingHeader(
    id="20261206T112233Z-node-req-1",
    node="node",
    console_id="req-1",
    instance_uuid="inst-1",
    target="127.0.0.1:5900",
    token_hash="ab" * 32,
    started_at=1_796_556_153.0,
)


def write(path: Path, batches: list[list[tuple[int, int, bytes]]], finish: bool = True) -> list[int]:
    """Write a recording in C{batches}; the file size after each batch."""
    encoder = RecordEncoder()
    sizes = []
    with open(path, "wb") as f:
        f.write(encoder.start(HEADER))
        sizes.append(f.tell())
        for batch in batches:
            f.write(encoder.batch(batch))
            sizes.append(f.tell())
        if finish:
            f.write(encoder.finish())
    return sizes


def test_a_recording_reads_back(tmp_path: Path) -> None:
    """Records written in batches read back in order, with the header, and the file counts as complete."""
    path = tmp_path / "r.txrec"
    batches = [[(SERVER, 0, b"RFB 003.008\n")], [(INPUT, 5, b"\x04\x01\0\0\0\0\0a"), (SERVER, 9, b"x" * 70000)]]
    write(path, batches)
    recording = read_file(str(path))
    assert recording.header == HEADER
    assert recording.records == [r for batch in batches for r in batch]
    assert recording.complete
    assert recording.server_bytes() == 12 + 70000
    assert recording.duration_ms() == 9
    assert read_header(str(path)) == HEADER


def test_gzip_reads_a_complete_recording(tmp_path: Path) -> None:
    """A finished recording is a gzip file: zcat shows MAGIC and the records."""
    path = tmp_path / "r.txrec"
    write(path, [[(SERVER, 1, b"hello")]])
    inner = gzip.decompress(path.read_bytes())
    assert inner.startswith(MAGIC)
    assert parse(inner)[1] == [(SERVER, 1, b"hello")]


def test_a_file_cut_anywhere_reads_up_to_its_last_complete_batch(tmp_path: Path) -> None:
    """Cut at every byte (a kill -9 mid-write), a recording reads every batch flushed before the cut and never a damaged record."""
    path = tmp_path / "r.txrec"
    batches = [[(SERVER, i, bytes([i]) * (i * 37 % 300 + 1))] for i in range(1, 30)]
    sizes = write(path, batches, finish=False)
    data = path.read_bytes()
    flat = [r for batch in batches for r in batch]
    for cut in range(sizes[0], len(data) + 1):
        inner, complete = inflate([data[:cut]])
        header, records = parse(inner)
        assert header == HEADER and not complete
        flushed = sum(1 for size in sizes[1:] if size <= cut)
        assert records[:flushed] == flat[:flushed]
        assert records == flat[: len(records)]


def test_an_end_record_and_the_trailer_make_it_complete(tmp_path: Path) -> None:
    """The gzip trailer marks a recording finished; before it, it reads as cut short."""
    path = tmp_path / "r.txrec"
    write(path, [[(END, 3, b'{"why": "x"}')]], finish=False)
    assert not read_file(str(path)).complete
    write(path, [[(END, 3, b'{"why": "x"}')]], finish=True)
    assert read_file(str(path)).complete


def test_other_files_are_not_recordings(tmp_path: Path) -> None:
    """A gzip file without the magic, or no gzip at all, is refused."""
    other = tmp_path / "other.txrec"
    other.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(NotARecording):
        read_file(str(other))
    other.write_bytes(b"plain text")
    with pytest.raises(NotARecording):
        read_file(str(other))
    z = zlib.compressobj()
    other.write_bytes(z.compress(b"x") + z.flush())
    with pytest.raises(NotARecording):
        read_header(str(other))


def test_ids_name_files_and_nothing_else() -> None:
    """An id is a time, a node and a console id; a path, a dot-dot or a slash is no id."""
    rid = recording_id("20261206T112233Z", "proxy-1:6080", "req-1f/..")
    assert valid_id(rid) and "/" not in rid and ":" not in rid
    for bad in ("../x", "20261206T112233Z-../a", "20261206T112233Z-a/b", "", "x" * 10, "20261206T112233Z-"):
        assert not valid_id(bad)
    assert RecordingDirectory("/nowhere").path_for("../../etc/passwd") is None


def test_the_directory_lists_filters_and_purges(tmp_path: Path) -> None:
    """The directory lists recordings by instance and time, shows no token, deletes one and purges old ones."""
    import os

    directory = RecordingDirectory(str(tmp_path))
    write(tmp_path / f"{HEADER.id}.txrec", [[(SERVER, 0, b"x")]])
    other = RecordingHeader(**{**HEADER.__dict__, "id": "20261206T120000Z-n-req-2", "instance_uuid": "inst-2", "started_at": HEADER.started_at + 3600})
    encoder = RecordEncoder()
    (tmp_path / f"{other.id}.txrec").write_bytes(encoder.start(other))
    (tmp_path / "junk.txrec").write_bytes(b"junk")
    os.utime(tmp_path / f"{HEADER.id}.txrec", (HEADER.started_at + 60, HEADER.started_at + 60))
    os.utime(tmp_path / f"{other.id}.txrec", (other.started_at + 60, other.started_at + 60))
    assert [r["id"] for r in directory.find()] == [HEADER.id, other.id]
    assert [r["id"] for r in directory.find(instance_uuid="inst-2")] == [other.id]
    assert [r["id"] for r in directory.find(since=HEADER.started_at + 120)] == [other.id]
    assert [r["id"] for r in directory.find(until=HEADER.started_at + 120)] == [HEADER.id]
    meta = directory.metadata(HEADER.id)
    assert meta is not None and meta["token_hash"] == HEADER.token_hash
    assert meta["started_at"] == "2026-12-06T11:22:33Z"
    assert directory.purge(HEADER.started_at + 120) == [HEADER.id]
    assert directory.delete(other.id) and not directory.delete(other.id)
    assert directory.find() == []
