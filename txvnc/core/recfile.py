"""
The console recording file (docs/recording.md): one gzip stream, written
as the console goes and flushed after every batch of records, holding a
header and then timed records.

Both halves need it: the proxy writes recordings, the token API lists and
serves them, so it lives here. It does no I/O of its own but for
L{read_file} and L{read_header}, which callers run off the reactor thread.

Inside the gzip stream (what C{zcat FILE} prints):

    MAGIC                      b"TXVNCREC1\\n"
    record*                    kind (u8), milliseconds since the start
                               (u32), length (u32), that many bytes

all big-endian. The first record is the L{HEADER} (JSON); the others are
L{SERVER} (bytes the browser was sent), L{INPUT} (a key or pointer
message the browser sent), L{CLIPBOARD} (clipboard text the browser sent),
L{GAP} (the recording stopped short: JSON naming why) and L{END} (JSON:
how the console ended).

Each batch ends with a zlib sync flush, so everything up to the last flush
can be decompressed without the gzip trailer: a proxy killed mid-console
leaves a file that reads up to its last complete record.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

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
#: gzip framing for zlib (RFC 1952), so C{zcat} reads a recording.
_GZIP_WBITS = 31
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
    version: int = 1
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
    Turns records into the bytes to append to a recording file: the gzip
    stream, flushed after each batch. Level 1 by default: a console's
    stream is mostly compressed already (Tight, ZRLE), and the writer must
    keep up with the fastest console.
    """

    def __init__(self, level: int = 1) -> None:
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)

    def start(self, header: RecordingHeader) -> bytes:
        """The file's first bytes: the gzip header, MAGIC and the header."""
        return self.batch([(HEADER, 0, header.to_bytes())], MAGIC)

    def batch(
        self, records: Iterable[tuple[int, int, bytes]], prefix: bytes = b""
    ) -> bytes:
        """
        C{records} (kind, milliseconds, data) compressed and sync-flushed:
        once these bytes are on disk, every record so far can be read.
        """
        z = self._zlib
        parts = [z.compress(prefix)] if prefix else []
        for kind, ms, data in records:
            parts.append(z.compress(_RECORD.pack(kind, min(ms, MAX_MS), len(data))))
            parts.append(z.compress(data))
        parts.append(z.flush(zlib.Z_SYNC_FLUSH))
        return b"".join(parts)

    def finish(self) -> bytes:
        """The end of the gzip stream (its trailer): the file is complete."""
        return self._zlib.flush(zlib.Z_FINISH)


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


def inflate(chunks: Iterable[bytes]) -> tuple[bytes, bool]:
    """
    The bytes inside a recording's gzip stream, as far as they go, and
    whether the stream ended with its trailer. A truncated stream gives what
    was flushed; damaged data ends the reading where it starts.
    """
    z = zlib.decompressobj(_GZIP_WBITS)
    out = []
    try:
        for chunk in chunks:
            out.append(z.decompress(chunk))
            if z.eof:
                break
    except zlib.error:
        return b"".join(out), False
    return b"".join(out), z.eof


def parse(data: bytes) -> tuple[RecordingHeader, list[tuple[int, int, bytes]]]:
    """
    The header and records in the inner stream C{data}; a record cut short
    at the end is left out.

    @raise NotARecording: when C{data} does not start with a header.
    """
    if not data.startswith(MAGIC):
        raise NotARecording("not a txvnc recording")
    records = list(_records(data, len(MAGIC)))
    if not records or records[0][0] != HEADER:
        raise NotARecording("the recording has no header")
    return RecordingHeader.from_bytes(records[0][2]), records[1:]


def _records(data: bytes, offset: int) -> Iterator[tuple[int, int, bytes]]:
    size = _RECORD.size
    end = len(data)
    while offset + size <= end:
        kind, ms, length = _RECORD.unpack_from(data, offset)
        start = offset + size
        if start + length > end:
            return
        yield kind, ms, data[start : start + length]
        offset = start + length


def _chunks(path: str, size: int = 256 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def read_file(path: str) -> Recording:
    """
    Read a recording file, as much as there is.

    @raise NotARecording: when it is not one.
    @raise OSError: when it cannot be read.
    """
    data, complete = inflate(_chunks(path))
    header, records = parse(data)
    return Recording(header, records, complete)


def read_header(path: str) -> RecordingHeader:
    """
    Only the header of a recording file (its first few hundred bytes).

    @raise NotARecording: when it is not one.
    @raise OSError: when it cannot be read.
    """
    z = zlib.decompressobj(_GZIP_WBITS)
    data = b""
    try:
        for chunk in _chunks(path, 4096):
            data += z.decompress(chunk)
            if len(data) >= len(MAGIC) + _RECORD.size:
                length = _RECORD.unpack_from(data, len(MAGIC))[2]
                if len(data) >= len(MAGIC) + _RECORD.size + length:
                    break
            if z.eof or len(data) >= 65536:
                break
    except zlib.error:
        pass
    return parse(data)[0]
