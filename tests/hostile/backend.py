"""
A stand-in VNC server for the hostile suite, run as its own process.

It speaks no RFB: each connection's first line, sent by the test through the
proxy, says what the connection does, so one server plays every part:

    ECHO TAG                  send back everything received
    STREAM TAG OUT IN [HOLD|WAIT]
                              send OUT pseudo-random bytes and read IN bytes
                              at the same time, then close; with HOLD, read
                              nothing until "go TAG" arrives on stdin; with
                              WAIT, send nothing until the first byte comes
    RESET TAG OUT             send OUT bytes, then reset the connection (RST)

Events go to stdout, one line each, for the test to wait on:

    listening PORT
    open TAG
    stalled TAG sent=N        a write has not drained for a second
    done TAG sent=N out=SHA received=M in=SHA
    closed TAG received=M     the connection is gone (either side closed it)

The bytes a STREAM sends are L{stream_chunks} of the tag, so the test can
hash what it should receive without the data crossing any other channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct
import sys
from collections.abc import Iterator

CHUNK = 64 * 1024
STALL_AFTER = 1.0


def stream_chunks(tag: str, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """
    The C{size} bytes a STREAM with this C{tag} sends, in chunks.
    """
    rng = random.Random(tag)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def stream_sha256(tag: str, size: int) -> str:
    """
    The SHA-256 of what a STREAM with this C{tag} sends.
    """
    digest = hashlib.sha256()
    for data in stream_chunks(tag, size):
        digest.update(data)
    return digest.hexdigest()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Backend:
    def __init__(self) -> None:
        self.go: dict[str, asyncio.Event] = {}

    def gate(self, tag: str) -> asyncio.Event:
        return self.go.setdefault(tag, asyncio.Event())

    async def control(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        while line := await reader.readline():
            words = line.decode().split()
            if len(words) == 2 and words[0] == "go":
                self.gate(words[1]).set()

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        tag = "?"
        received = 0
        try:
            words = (await reader.readline()).decode("ascii", "replace").split()
            if len(words) < 2:
                return
            command, tag, args = words[0], words[1], words[2:]
            say(f"open {tag}")
            if command == "ECHO":
                while data := await reader.read(CHUNK):
                    received += len(data)
                    writer.write(data)
                    await writer.drain()
            elif command == "STREAM":
                out, into = int(args[0]), int(args[1])
                hold = args[2:] == ["HOLD"]
                digest = hashlib.sha256()
                if args[2:] == ["WAIT"]:
                    first = await reader.read(min(CHUNK, into))
                    received += len(first)
                    digest.update(first)
                sent_box = [0]
                sending = asyncio.ensure_future(self._send(writer, tag, out, sent_box))
                if hold:
                    await self.gate(tag).wait()
                while received < into:
                    data = await reader.read(min(CHUNK, into - received))
                    if not data:
                        break
                    received += len(data)
                    digest.update(data)
                out_sha = await sending
                say(
                    f"done {tag} sent={sent_box[0]} out={out_sha} "
                    f"received={received} in={digest.hexdigest()}"
                )
            elif command == "RESET":
                out = int(args[0])
                for data in stream_chunks(tag, out):
                    writer.write(data)
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                writer.transport.abort()
                return
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            say(f"closed {tag} received={received}")

    async def _send(
        self, writer: asyncio.StreamWriter, tag: str, size: int, sent: list[int]
    ) -> str:
        digest = hashlib.sha256()
        for data in stream_chunks(tag, size):
            digest.update(data)
            writer.write(data)
            try:
                await asyncio.wait_for(asyncio.shield(writer.drain()), STALL_AFTER)
            except TimeoutError:
                say(f"stalled {tag} sent={sent[0]}")
                await writer.drain()
            sent[0] += len(data)
        return digest.hexdigest()


async def main() -> None:
    backend = Backend()
    server = await asyncio.start_server(
        backend.serve, "127.0.0.1", 0, limit=CHUNK, backlog=2048
    )
    say(f"listening {server.sockets[0].getsockname()[1]}")
    await backend.control()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
