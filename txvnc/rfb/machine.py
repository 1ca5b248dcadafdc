"""
A parser written as a generator: it yields how many bytes it needs next (an
C{int}) or an action for its driver (anything else), and is resumed with
those bytes or with L{None}. The driver owns the buffer, so the parsing code
reads top to bottom like the protocol it implements.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

#: What a step generator yields: a byte count to read, or an action.
Steps = Generator[Any, Any, Any]


class ByteMachine:
    """
    Drives a step generator with bytes as they arrive.

    @ivar done: whether the generator has finished.
    """

    def __init__(self, steps: Steps) -> None:
        self._gen = steps
        self._buffer = bytearray()
        self._want: int | None = None
        self.done = False
        self._pending: list[Any] = []
        self._advance(None)

    def _advance(self, value: bytes | None) -> None:
        try:
            item = self._gen.send(value)
            while not isinstance(item, int):
                self._pending.append(item)
                item = self._gen.send(None)
            self._want = item
        except StopIteration:
            self._want = None
            self.done = True

    def receive(self, data: bytes) -> list[Any]:
        """
        Feed bytes; the actions they caused, in order.
        """
        self._buffer += data
        while self._want is not None and len(self._buffer) >= self._want:
            chunk = bytes(self._buffer[: self._want])
            del self._buffer[: self._want]
            self._advance(chunk)
        actions, self._pending = self._pending, []
        return actions

    def buffered(self) -> int:
        """
        How many received bytes wait for the parser.
        """
        return len(self._buffer)

    def leftover(self) -> bytes:
        """
        Bytes received after the generator finished; the buffer is emptied.
        """
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest
