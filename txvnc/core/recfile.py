"""
The console recording file (docs/recording.md): one zstd frame (RFC 8878),
written as the console goes and flushed after every batch of records,
holding a header and then timed records.

Both halves need it: the proxy writes recordings, the token API lists and
serves them, so it lives here. It does no I/O of its own but for
L{RecordReader} and the functions built on it, which callers run off the
reactor thread.

Inside the compressed stream (what C{zstdcat FILE} prints):

    MAGIC                      b"TXVNCREC1\\n"
    record*                    kind (u8), milliseconds since the start
                               (u32), length (u32), that many bytes

all big-endian. The first record is the L{HEADER} (JSON); the others are
L{SERVER} (bytes the browser was sent), L{INPUT} (a key or pointer
message the browser sent), L{CLIPBOARD} (clipboard text the browser sent),
L{GAP} (the recording stopped short: JSON naming why) and L{END} (JSON:
how the console ended).

Each batch ends with a zstd block flush, so everything up to the last
flush can be decompressed without the frame's end: a proxy killed
mid-console leaves a file that reads up to its last complete record.

Version 1 files (the release before) hold the same inner stream in one
gzip stream, sync-flushed per batch; the reader tells the two apart by
their first bytes and reads both.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import zstandard

MAGIC = b"TXVNCREC1\n"
#: A recording file's name is its id and this.
SUFFIX = ".txrec"

HEADER = 0
SERVER = 1
INPUT = 2
CLIPBOARD = 3
GAP = 4
END = 5
KINDS = {
    HEADER: "header",
    SERVER: "server",
    INPUT: "input",
    CLIPBOARD: "clipboard",
    GAP: "gap",
    END: "end",
}

_RECORD = struct.Struct("!BII")
#: The file format this release writes: 2, zstd; 1 was gzip.
VERSION = 2
#: How a file starts: a zstd frame (version 2) or a gzip stream (version 1).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
#: gzip framing for zlib (RFC 1952), for version 1 files.
_GZIP_WBITS = 31
#: The most a reader holds of a file's inner stream at once, beside one
#: record: what decompressing one zstd block (or this much gzip) gives.
PIECE = 128 * 1024
#: The longest record a reader takes (a longer one ends the readable part,
#: as damage would). Records are reads of the relay (at most a few hundred
#: KiB) and browser messages (at most C{--max-message-size}, 4 MiB by
#: default): this bounds what reading any file may hold in memory.
MAX_RECORD = 64 * 1024 * 1024
#: A record's milliseconds are a u32: 49 days, beyond any session cap.
MAX_MS = 2**32 - 1

#: What an id looks like: a UTC time, the node, the console's id.
RECORDING_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9._-]{1,160}$")


class NotARecording(ValueError):
    """
    A file that does not start like a recording.
    """


def valid_id(recording_id: str) -> bool:
    """
    Whether C{recording_id} may name a file (no path separators, no dots
    alone): the API checks every id it is given with this.
    """
    return bool(RECORDING_ID.match(recording_id)) and ".." not in recording_id


def recording_id(started: str, node: str, conn_id: str) -> str:
    """
    The id of a recording: C{started} (C{YYYYmmddTHHMMSSZ}), the node and
    the console's id, each cut to what an id may hold.
    """
    clean = re.sub(r"[^A-Za-z0-9._-]|\.\.+", "_", f"{node}-{conn_id}")[:100]
    return f"{started}-{clean}"


@dataclass(frozen=True)
class RecordingHeader:
    """
    What a recording is of. Never a token nor a password: the token only by
    its hash.
    """

    id: str
    node: str
    console_id: str
    instance_uuid: str | None
    target: str
    token_hash: str | None
    #: POSIX seconds.
    started_at: float
    #: The browser's key and pointer messages are recorded.
    input: bool = False
    #: The clipboard text the browser sent is recorded.
    clipboard: bool = False
    #: The file format (L{VERSION} when written by this release).
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> RecordingHeader:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise NotARecording("the header is not a JSON object")
        names = {"id", "node", "console_id", "instance_uuid", "target"}
        names |= {"token_hash", "started_at", "input", "clipboard", "version"}
        try:
            return cls(
                **{k: v for k, v in raw.items() if k in names},
                extra={k: v for k, v in raw.items() if k not in names | {"extra"}},
            )
        except TypeError as e:
            raise NotARecording(f"the header lacks a field: {e}") from None


def frame(kind: int, ms: int, data: bytes) -> bytes:
    """One record, uncompressed."""
    return _RECORD.pack(kind, min(ms, MAX_MS), len(data)) + data


class RecordEncoder:
    """
    Turns records into the bytes to append to a recording file: one zstd
    frame, flushed after each batch. Level 1: a console's stream is mostly
    compressed already (Tight, ZRLE), and recording must keep up with the
    fastest console; zstd at level 1 compresses data it cannot shrink at
    gigabytes a second, where zlib managed tens of megabytes
    (docs/recording.md). python-zstandard lets go of the GIL while it
    compresses, so other threads run meanwhile (the proxy compresses on
    its reactor thread; its writer thread writes). No
    content checksum: it took 40% of the compressing time on a fast console,
    and a file cut short, the case that matters, has none to check.
    """

    def __init__(self, level: int = 1) -> None:
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=False)
        self._zstd = compressor.compressobj()

    def start(self, header: RecordingHeader) -> bytes:
        """The file's first bytes: the frame header, MAGIC and the header."""
        return self.batch([(HEADER, 0, header.to_bytes())], MAGIC)

    def batch(
        self, records: Iterable[tuple[int, int, bytes]], prefix: bytes = b""
    ) -> bytes:
        """
        C{records} (kind, milliseconds, data) compressed and flushed: once
        these bytes are on disk, every record so far can be read.
        """
        parts = [self._zstd.compress(prefix)] if prefix else []
        for kind, ms, data in records:
            parts += self.record(kind, ms, data)
        parts.append(self.flush())
        return b"".join(parts)

    def record(self, kind: int, ms: int, data: bytes) -> list[bytes]:
        """
        One record compressed, not flushed: the pieces zstd has ready
        (often none: it holds data until a block fills or L{flush}). The
        relay's tap calls this once per recorded read.
        """
        z = self._zstd
        head = z.compress(_RECORD.pack(kind, min(ms, MAX_MS), len(data)))
        body = z.compress(data)
        if head:
            return [head, body] if body else [head]
        return [body] if body else []

    def flush(self) -> bytes:
        """The rest of what was added: once written, all of it can be read."""
        return self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        """The end of the frame: the file is complete."""
        return self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


@dataclass
class Recording:
    """
    A recording as read: its header, its records (kind, milliseconds,
    data) and whether the file ended properly (L{False} after a crash: the
    records are those up to the last complete one).
    """

    header: RecordingHeader
    records: list[tuple[int, int, bytes]]
    complete: bool

    def server_bytes(self) -> int:
        return sum(len(d) for k, _, d in self.records if k == SERVER)

    def duration_ms(self) -> int:
        return self.records[-1][1] if self.records else 0


class _Input:
    """Compressed chunks, taken a bounded slice at a time."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        """Up to C{n} bytes (fewer at a chunk's end); C{b""} at the end."""
        while self._at >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._chunk, self._at = chunk, 0
        out = self._chunk[self._at : self._at + n]
        self._at += len(out)
        return out

    def exactly(self, n: int) -> bytes:
        """C{n} bytes, or fewer at the end."""
        parts = []
        while n > 0:
            part = self.take(n)
            if not part:
                break
            parts.append(part)
            n -= len(part)
        return b"".join(parts)


class Inflater:
    """
    A recording file's inner stream (either version), in pieces of at
    most L{PIECE} bytes however well the data compressed: a few bytes of
    zstd can stand for 128 KiB, so the input goes to the decompressor one
    block at a time. C{complete} says, once the pieces are all read,
    whether the stream ended properly (the zstd frame's end and checksum,
    or the gzip trailer); a stream cut short gives what was flushed, and
    damaged data ends the reading where it starts.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._input = _Input(chunks)
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        start = self._input.exactly(4)
        if start.startswith(ZSTD_MAGIC):
            return self._zstd(start)
        if start.startswith(GZIP_MAGIC):
            return self._gzip(start)
        return iter(())

    def _zstd(self, start: bytes) -> Iterator[bytes]:
        # The frame (RFC 8878, 3.1.1): its header, then blocks, each a
        # 3-byte header (last block, type, size) and its content, then a
        # checksum when the header says so.
        data = self._input
        head = start + data.exactly(1)
        if len(head) < 5:
            return
        descriptor = head[4]
        single = bool(descriptor & 0x20)
        head += data.exactly(
            (0 if single else 1)
            + (0, 1, 2, 4)[descriptor & 3]
            + ((1 if single else 0), 2, 4, 8)[descriptor >> 6]
        )
        checksum = 4 if descriptor & 4 else 0
        z = zstandard.ZstdDecompressor().decompressobj()
        try:
            z.decompress(head)
            while True:
                block = data.exactly(3)
                if len(block) < 3:
                    return
                header = int.from_bytes(block, "little")
                kind = (header >> 1) & 3
                if kind == 3:
                    return  # reserved: damaged
                left = 1 if kind == 1 else header >> 3
                piece = block
                while True:
                    if left:
                        more = data.take(left)
                        left -= len(more)
                        piece += more
                    out = z.decompress(piece)
                    if out:
                        yield out
                    if not left:
                        break
                    if not more:
                        return  # cut short inside the block
                    piece = b""
                if header & 1:
                    if checksum:
                        z.decompress(data.exactly(checksum))
                    self.complete = z.eof
                    return
        except zstandard.ZstdError:
            return

    def _gzip(self, start: bytes) -> Iterator[bytes]:
        z = zlib.decompressobj(_GZIP_WBITS)
        chunk = start
        try:
            while True:
                out = z.decompress(chunk, PIECE)
                if out:
                    yield out
                if z.eof:
                    self.complete = True
                    return
                chunk = z.unconsumed_tail
                if not chunk and len(out) < PIECE:
                    chunk = self._input.take(PIECE)
                    if not chunk:
                        return
        except zlib.error:
            return


def inflate(chunks: Iterable[bytes]) -> tuple[bytes, bool]:
    """
    The whole inner stream of a recording's bytes, as far as it goes, and
    whether it ended properly (see L{Inflater}).
    """
    inflater = Inflater(chunks)
    data = b"".join(inflater)
    return data, inflater.complete


def parse(data: bytes) -> tuple[RecordingHeader, list[tuple[int, int, bytes]]]:
    """
    The header and records in the inner stream C{data}; a record cut short
    at the end is left out.

    @raise NotARecording: when C{data} does not start with a header.
    """
    reader = RecordReader([data], compressed=False)
    return reader.header, list(reader)


class RecordReader:
    """
    A recording's header, then its records one at a time (iterate), read
    in bounded memory: one decompressed piece and one record (at most
    L{MAX_RECORD}) at a time, whatever the file's size. C{complete} says,
    after the records are all read, whether the file ended properly.

    @raise NotARecording: from the constructor, when it is not one.
    """

    def __init__(self, chunks: Iterable[bytes], compressed: bool = True) -> None:
        self._inflater = Inflater(chunks) if compressed else None
        self._pieces = iter(self._inflater if self._inflater is not None else chunks)
        self._buffer = bytearray()
        #: Where the next record starts in the buffer.
        self._at = 0
        self._ended = False
        while len(self._buffer) < len(MAGIC) and self._fill():
            pass
        if not self._buffer.startswith(MAGIC):
            raise NotARecording("not a txvnc recording")
        self._at = len(MAGIC)
        first = self._next()
        if first is None or first[0] != HEADER:
            raise NotARecording("the recording has no header")
        self.header = RecordingHeader.from_bytes(first[2])

    @classmethod
    def open(cls, f: IO[bytes], size: int = 64 * 1024) -> RecordReader:
        """A reader of the open file C{f}, read C{size} bytes at a time."""
        return cls(iter(lambda: f.read(size), b""))

    @property
    def complete(self) -> bool:
        return self._inflater is not None and self._inflater.complete

    def _fill(self) -> bool:
        """One more piece in the buffer (what was read is dropped first)."""
        if self._ended:
            return False
        piece = next(self._pieces, None)
        if piece is None:
            self._ended = True
            return False
        del self._buffer[: self._at]
        self._at = 0
        self._buffer += piece
        return True

    def _next(self) -> tuple[int, int, bytes] | None:
        size = _RECORD.size
        while len(self._buffer) - self._at < size:
            if not self._fill():
                return None
        kind, ms, length = _RECORD.unpack_from(self._buffer, self._at)
        if length > MAX_RECORD:
            return None
        while len(self._buffer) - self._at < size + length:
            if not self._fill():
                return None
        start = self._at + size
        self._at = start + length
        return kind, ms, bytes(self._buffer[start : self._at])

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        while (record := self._next()) is not None:
            yield record


def read_file(path: str) -> Recording:
    """
    Read a whole recording file into memory, as much as there is (for
    tools and tests: what serves recordings reads them with
    L{RecordReader}, a record at a time).

    @raise NotARecording: when it is not one.
    @raise OSError: when it cannot be read.
    """
    with open(path, "rb") as f:
        reader = RecordReader.open(f)
        records = list(reader)
    return Recording(reader.header, records, reader.complete)


def read_header(path: str) -> RecordingHeader:
    """
    Only the header of a recording file (its first few hundred bytes).

    @raise NotARecording: when it is not one.
    @raise OSError: when it cannot be read.
    """
    with open(path, "rb") as f:
        return RecordReader.open(f, 4096).header
