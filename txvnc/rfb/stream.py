"""
A message filter over a byte stream, written as a generator of requests:

    C{yield n}           read n bytes (the generator gets them; nothing is
                         forwarded unless it says so)
    C{yield Emit(data)}  forward these bytes
    C{yield Copy(n)}     forward the next n bytes as they arrive
    C{yield Skip(n)}     drop the next n bytes as they arrive

Copy and Skip never buffer, so a megabyte of clipboard text or raw pixels
flows through in whatever pieces the network delivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from txvnc.rfb.machine import Steps


@dataclass(frozen=True)
class Emit:
    data: bytes


@dataclass(frozen=True)
class Copy:
    size: int


@dataclass(frozen=True)
class Skip:
    size: int


class StreamFilter:
    """
    Drives a filter generator; L{receive} returns the bytes to forward.
    """

    def __init__(self, steps: Steps) -> None:
        self._gen = steps
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._want: Any = None
        self._advance(None)

    def _advance(self, value: bytes | None) -> None:
        item = self._gen.send(value)
        while isinstance(item, Emit):
            self._out.append(item.data)
            item = self._gen.send(None)
        self._want = item

    def receive(self, data: bytes) -> bytes:
        """
        Feed bytes; what may pass on, joined.
        """
        want = self._want
        if not self._buffer and isinstance(want, Copy) and len(data) <= want.size:
            # The common case of a large payload: pass it on without copying.
            self._out.append(data)
            self._want = Copy(self._want.size - len(data))
            data = b""
            if self._want.size == 0:
                self._advance(None)
        self._buffer += data
        while True:
            want = self._want
            if isinstance(want, int):
                if len(self._buffer) < want:
                    break
                chunk = bytes(self._buffer[:want])
                del self._buffer[:want]
                self._advance(chunk)
            elif isinstance(want, (Copy, Skip)):
                if want.size == 0:
                    self._advance(None)
                    continue
                if not self._buffer:
                    break
                size = min(want.size, len(self._buffer))
                if isinstance(want, Copy):
                    self._out.append(bytes(self._buffer[:size]))
                    self._want = Copy(want.size - size)
                else:
                    self._want = Skip(want.size - size)
                del self._buffer[:size]
            else:
                raise TypeError(f"a stream filter cannot yield {want!r}")
        out, self._out = self._out, []
        return b"".join(out)
