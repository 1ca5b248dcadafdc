"""
A WebSocket client small enough to misbehave on purpose.

Real clients refuse to send unmasked frames, set RSV bits or lie about
lengths; this one writes whatever frame it is told to, on a raw asyncio
stream, and reads the server's frames as they come.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import struct
from dataclasses import dataclass

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

#: How long a test waits for the proxy to answer anything.
ANSWER_TIMEOUT = 30.0
#: A send that has not drained for this long is stalled.
STALL_AFTER = 1.0


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8", "replace")


@dataclass
class Response:
    """
    The server's answer to an upgrade request.
    """

    status: int
    headers: dict[str, str]
    body: bytes


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """
    RFC 6455 masking, fast enough for a gigabyte: one big-integer XOR.
    """
    if not payload or key == b"\0\0\0\0":
        return payload
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")
    return value.to_bytes(n, "little")


def encode_frame(
    payload: bytes,
    opcode: int = OP_BINARY,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """
    One frame, as told: C{length} overrides the length field (to lie), C{rsv}
    sets the three reserved bits, C{mask=False} sends it unmasked.
    """
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0xF])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + mask_bytes(payload, key)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def upgrade_request(
    host: str,
    path: str,
    headers: dict[str, str] | None = None,
    protocol: str | None = "binary",
) -> bytes:
    """
    The bytes of a browser-like upgrade request.
    """
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version: 13",
    ]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Stream(asyncio.Protocol):
    """
    A byte stream that keeps what arrived before a reset: asyncio's
    StreamReader raises a reset at once and drops what it had buffered,
    and a server that aborts right after its close frame would lose it.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.ended = False
        self._changed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._changed.set()

    def eof_received(self) -> bool:
        self.ended = True
        self._changed.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.lost = exc
        self._changed.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drain(self) -> None:
        await self._writable.wait()
        if self.lost is not None:
            raise ConnectionResetError(str(self.lost))

    async def wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if self.ended:
                raise EOFError(f"connection ended ({self.lost or 'EOF'})")
            await self.wait_change()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_until(self, mark: bytes) -> bytes:
        while (at := self.buffer.find(mark)) < 0:
            if self.ended:
                raise EOFError(f"connection ended ({self.lost or 'EOF'})")
            await self.wait_change()
        return await self.read_exactly(at + len(mark))


class WSClient:
    """
    One connection to the proxy.
    """

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        assert stream.transport is not None
        self.transport = stream.transport
        self.mask_key = os.urandom(4)
        self.bytes_written = 0
        #: Answer the proxy's keepalive pings as a browser does (and never
        #: return them from read_frame); off to play a vanished browser.
        self.auto_pong = True
        self.pings = 0
        #: Set when a send has waited a second for the buffer to drain.
        self.stalled = asyncio.Event()

    @classmethod
    async def open_tcp(
        cls, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> WSClient:
        loop = asyncio.get_running_loop()
        _, stream = await loop.create_connection(
            _Stream, host, port, ssl=tls, server_hostname="localhost" if tls else None
        )
        return cls(stream)

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        protocol: str | None = "binary",
        tls: ssl.SSLContext | None = None,
    ) -> tuple[WSClient, Response]:
        """
        Connect (over TLS with C{tls}) and send an upgrade request; the
        response says whether it was accepted (101).
        """
        client = await cls.open_tcp(host, port, tls)
        client.send(upgrade_request(f"{host}:{port}", path, headers, protocol))
        return client, await client.read_response()

    async def read_response(self) -> Response:
        """
        An HTTP response head (and its body when it has a length).
        """
        head = await asyncio.wait_for(
            self.stream.read_until(b"\r\n\r\n"), ANSWER_TIMEOUT
        )
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if status != 101 and "content-length" in headers:
            body = await asyncio.wait_for(
                self.stream.read_exactly(int(headers["content-length"])),
                ANSWER_TIMEOUT,
            )
        return Response(status, headers, body)

    @property
    def local_port(self) -> int:
        """
        This end's port: the proxy's log names each console by it.
        """
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes) -> None:
        self.bytes_written += len(data)
        self.transport.write(data)

    async def drain(self) -> None:
        """
        Wait until the send buffer is below its high-water mark; set
        C{stalled} when that takes over a second.
        """
        try:
            await asyncio.wait_for(asyncio.shield(self.stream.drain()), STALL_AFTER)
        except TimeoutError:
            self.stalled.set()
            await self.stream.drain()

    def send_frame(self, payload: bytes, opcode: int = OP_BINARY, **kw: object) -> None:
        kw.setdefault("key", self.mask_key)
        self.send(encode_frame(payload, opcode, **kw))  # type: ignore[arg-type]

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    async def read_frame(self, timeout: float = ANSWER_TIMEOUT) -> Frame:
        return await asyncio.wait_for(self._read_frame(), timeout)

    async def _read_frame(self) -> Frame:
        while True:
            frame = await self._read_one_frame()
            if frame.opcode == OP_PING and self.auto_pong:
                self.pings += 1
                if not self.stream.ended:
                    self.send_frame(frame.payload, OP_PONG)
                continue
            return frame

    async def _read_one_frame(self) -> Frame:
        b0, b1 = await self.stream.read_exactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.stream.read_exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.stream.read_exactly(8))
        key = await self.stream.read_exactly(4) if b1 & 0x80 else None
        payload = await self.stream.read_exactly(n)
        if key is not None:
            payload = mask_bytes(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload)

    async def expect_close(self, timeout: float = ANSWER_TIMEOUT) -> Frame:
        """
        Read (and drop) frames until the server's close frame, answer it,
        and wait for the server to end the TCP connection.
        """
        while True:
            frame = await self.read_frame(timeout)
            if frame.opcode == OP_CLOSE:
                break
        if not self.stream.ended:
            self.send_frame(frame.payload[:2], OP_CLOSE)
        await self.wait_eof(timeout)
        return frame

    async def wait_eof(self, timeout: float = ANSWER_TIMEOUT) -> None:
        """
        Wait until the server ends the TCP connection, dropping what comes.
        """

        async def ended() -> None:
            while not self.stream.ended:
                self.stream.buffer.clear()
                await self.stream.wait_change()

        await asyncio.wait_for(ended(), timeout)

    def close(self) -> None:
        self.transport.close()
