"""
The recording file format (txvnc.core.recfile, docs/recording.md): what is
written reads back, a file cut anywhere reads up to its last complete
record, zstd tools read it too, and the previous release's gzip files
(version 1) still read, in bounded memory however large.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import zstandard

from txvnc.core.recfile import (
    END,
    INPUT,
    MAGIC,
    MAX_MS,
    PIECE,
    SERVER,
    VERSION,
    Inflater,
    NotARecording,
    RecordEncoder,
    RecordingHeader,
    RecordReader,
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


def write_v1(path: Path, batches: list[list[tuple[int, int, bytes]]], finish: bool = True) -> list[int]:
    """
    Write a recording as the previous release did (version 1: one gzip
    stream, zlib level 1, a sync flush per batch); the size after each batch.
    """
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    header = RecordingHeader(**{**HEADER.__dict__, "version": 1})

    def batch(records: list[tuple[int, int, bytes]], prefix: bytes = b"") -> bytes:
        out = [z.compress(prefix)]
        for kind, ms, data in records:
            out.append(z.compress(struct.pack("!BII", kind, min(ms, MAX_MS), len(data)) + data))
        return b"".join(out) + z.flush(zlib.Z_SYNC_FLUSH)

    sizes = []
    with open(path, "wb") as f:
        f.write(batch([(0, 0, header.to_bytes())], MAGIC))
        sizes.append(f.tell())
        for records in batches:
            f.write(batch(records))
            sizes.append(f.tell())
        if finish:
            f.write(z.flush(zlib.Z_FINISH))
    return sizes


def test_a_complete_recording_is_a_zstd_frame(tmp_path: Path) -> None:
    """A finished recording is a zstd file of format version 2: zstd's own decoder shows MAGIC and the records."""
    path = tmp_path / "r.txrec"
    write(path, [[(SERVER, 1, b"hello")]])
    inner = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    assert inner.startswith(MAGIC)
    header, records = parse(inner)
    assert records == [(SERVER, 1, b"hello")]
    assert header.version == VERSION == 2


@pytest.mark.skipif(shutil.which("zstdcat") is None, reason="zstd (Debian) is not installed: scripts/system-deps test")
def test_zstdcat_prints_a_recording_even_cut_short(tmp_path: Path) -> None:
    """C{zstdcat FILE} prints the inner stream of a finished recording, and of one cut short (a proxy killed mid-console) up to its last flush."""
    path = tmp_path / "r.txrec"
    batches = [[(SERVER, 1, b"hello" * 1000)], [(SERVER, 2, b"world")]]
    sizes = write(path, batches, finish=False)
    done = subprocess.run(["zstdcat", str(path)], capture_output=True, check=False)
    assert parse(done.stdout)[1] == [r for batch in batches for r in batch]
    path.write_bytes(path.read_bytes()[: sizes[1]])
    done = subprocess.run(["zstdcat", str(path)], capture_output=True, check=False)
    assert parse(done.stdout)[1] == batches[0]
    write(path, batches)
    done = subprocess.run(["zstdcat", str(path)], capture_output=True, check=True)
    assert parse(done.stdout)[1] == [r for batch in batches for r in batch]


def test_the_previous_releases_gzip_recordings_still_read(tmp_path: Path) -> None:
    """A version 1 file (gzip) reads like a version 2 one: header, records, complete or cut short, and zcat still reads it."""
    path = tmp_path / "old.txrec"
    batches = [[(SERVER, 0, b"RFB 003.008\n")], [(INPUT, 5, b"\x04\x01\0\0\0\0\0a"), (SERVER, 9, b"x" * 70000)]]
    sizes = write_v1(path, batches)
    recording = read_file(str(path))
    assert recording.header.version == 1 and recording.header.id == HEADER.id
    assert recording.records == [r for batch in batches for r in batch]
    assert recording.complete
    assert read_header(str(path)).id == HEADER.id
    assert parse(gzip.decompress(path.read_bytes()))[1] == recording.records
    path.write_bytes(path.read_bytes()[: sizes[1] + 3])
    recording = read_file(str(path))
    assert recording.records == batches[0] and not recording.complete


@pytest.mark.parametrize("version", [1, 2])
def test_reading_holds_a_bounded_piece_however_well_the_data_compressed(tmp_path: Path, version: int) -> None:
    """64 MiB of one byte compresses to a few kilobytes; reading it never holds more than one piece of the inner stream and one record."""
    path = tmp_path / "big.txrec"
    batches = [[(SERVER, i, b"x" * (1024 * 1024)) for i in range(16)] for _ in range(4)]
    (write_v1 if version == 1 else write)(path, batches)
    assert path.stat().st_size < 64 * 1024 * 1024 // 100
    with open(path, "rb") as f:
        inflater = Inflater(iter(lambda: f.read(65536), b""))
        largest = total = 0
        for piece in inflater:
            largest = max(largest, len(piece))
            total += len(piece)
    assert largest <= PIECE and inflater.complete
    assert total > 64 * 1024 * 1024
    with open(path, "rb") as f:
        reader = RecordReader.open(f)
        count = 0
        for kind, _ms, data in reader:
            assert (kind, len(data)) == (SERVER, 1024 * 1024) and data.count(b"x") == len(data)
            count += 1
    assert count == 64 and reader.complete


@pytest.mark.parametrize("version", [1, 2])
def test_a_file_cut_anywhere_reads_up_to_its_last_complete_batch(tmp_path: Path, version: int) -> None:
    """Cut at every byte (a kill -9 mid-write), a recording reads every batch flushed before the cut and never a damaged record."""
    path = tmp_path / "r.txrec"
    batches = [[(SERVER, i, bytes([i]) * (i * 37 % 300 + 1))] for i in range(1, 30)]
    sizes = (write_v1 if version == 1 else write)(path, batches, finish=False)
    data = path.read_bytes()
    flat = [r for batch in batches for r in batch]
    for cut in range(sizes[0], len(data) + 1):
        inner, complete = inflate([data[:cut]])
        header, records = parse(inner)
        assert header.id == HEADER.id and not complete
        flushed = sum(1 for size in sizes[1:] if size <= cut)
        assert records[:flushed] == flat[:flushed]
        assert records == flat[: len(records)]


def test_an_end_record_and_the_trailer_make_it_complete(tmp_path: Path) -> None:
    """The end of the zstd frame marks a recording finished; before it, it reads as cut short."""
    path = tmp_path / "r.txrec"
    write(path, [[(END, 3, b'{"why": "x"}')]], finish=False)
    assert not read_file(str(path)).complete
    write(path, [[(END, 3, b'{"why": "x"}')]], finish=True)
    assert read_file(str(path)).complete


def test_other_files_are_not_recordings(tmp_path: Path) -> None:
    """A zstd or gzip file without the magic, or neither at all, is refused."""
    other = tmp_path / "other.txrec"
    other.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(NotARecording):
        read_file(str(other))
    other.write_bytes(zstandard.ZstdCompressor().compress(b"hello"))
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


def test_a_frame_with_a_content_checksum_reads_complete_only_with_it(tmp_path: Path) -> None:
    """txvnc writes no checksum, but a recording another zstd writer made with one (zstd's command line does) reads complete, and cut inside the checksum does not."""
    encoder = RecordEncoder()
    inner = inflate([encoder.start(HEADER) + encoder.batch([(SERVER, 1, b"hello")]) + encoder.finish()])[0]
    data = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(inner)
    assert inflate([data]) == (inner, True)
    assert inflate([data[:-2]]) == (inner, False)
    assert inflate([data[:-4] + bytes(4)])[1] is False  # a wrong checksum
