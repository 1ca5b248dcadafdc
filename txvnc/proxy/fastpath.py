"""
The relay's hot path: fewer system calls, copies and layers per byte than
Twisted's and Autobahn's general-purpose code takes.

Measured with py-spy (docs/performance.md), the relay spent its time on:

 - Twisted reading 64 KiB per C{recv}, and writing only on the reactor's
   next turn (an C{epoll_ctl} to watch for writability, a wake-up, another
   C{epoll_ctl} to stop watching) for every single write;
 - the same 64 KiB as the threshold that pauses the producer, so every
   VNC read paused and resumed the VNC socket (two more C{epoll_ctl});
 - Autobahn joining every frame's header and payload into one new buffer,
   and re-slicing its whole receive buffer once per frame (quadratic in
   the number of frames per read).

So a plain TCP transport is tuned (L{tune}), writes go straight to the
socket with one gathering C{sendmsg} when nothing is queued before them
(L{send_now}), frames to the browser get their header sent beside the
payload (L{binary_frame_header}), and complete binary frames from the
browser are unmasked in one pass over the read (L{BinaryFrameReader}),
a binary frame cut by the end of a read held until the next completes it;
everything else (TLS transports, control frames, text, fragments,
protocol errors) takes the ordinary Twisted and Autobahn paths, which stay
the reference for correctness.

Flow control is unchanged: whatever the kernel does not take goes into
Twisted's buffer with C{transport.write}, which pauses the producer when
that buffer passes the transport's C{bufferSize}.

This is the one module of txvnc that touches Twisted's and Autobahn's
private internals: a TCP transport's buffers and socket (L{tune},
L{writable_now}, L{send_now}), Autobahn's compiled masker (L{unmask})
and, in L{FastWebSocketProtocol}, Autobahn's receive buffer, frame parser,
send queue, close frame and close reasons.
Checked against Twisted 26.10.0 and Autobahn 26.11.1, the upper bounds in
setup.cfg; tests/proxy/test_upstream_internals.py names each part used and
fails, by name, if a release moves one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket import USES_NVX
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import tcp

from txvnc.proxy.closecodes import close_reason


def _nvx_masker() -> tuple[Any, Any]:
    """
    Autobahn's compiled NVX masker's C{ffi} and C{lib}, or L{None}s: it is
    optional (Autobahn builds it where it can) and used only where Autobahn
    uses it (C{AUTOBAHN_USE_NVX} can turn it off, which holds here too).
    Its Python wrapper costs about 2 us per frame before the XOR.
    """
    if not USES_NVX:
        return None, None
    try:
        from _nvx_xormasker import ffi, lib  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - Autobahn without NVX
        return None, None
    return ffi, lib


_nvx_ffi, _nvx_lib = _nvx_masker()

#: Bytes asked of the kernel per read on a relay socket (Twisted: 64 KiB).
#: Also the write-buffer size past which the other side's reads pause.
#: Kept under glibc's 128 KiB mmap threshold: CPython allocates the whole
#: size for every recv, and a bigger buffer is mapped and unmapped each
#: time (14 us instead of 2 us for a 64-byte read on the benchmark machine).
READ_SIZE = 124 * 1024

#: Largest single send (Twisted: 128 KiB).
SEND_LIMIT = 1024 * 1024

#: Set on the transports L{tune} tuned: the reactor may hand their events to
#: them without Twisted's legacy log context (L{txvnc.ops.dispatch}).
RELAY_MARK = "txvnc_relay"

_OPCODE_BINARY_FIN = 0x82
_MASKED = 0x80


def _plain_tcp(transport: Any) -> bool:
    # TLS connections are either wrappers (not tcp.Connection) or
    # tcp.Connections that started TLS: neither may be written to directly.
    return isinstance(transport, tcp.Connection) and not transport.TLS


def tune(transport: Any) -> None:
    """
    Bigger reads and sends for a plain TCP transport, no Nagle delay (a
    console is interactive), and the relay's mark (L{RELAY_MARK});
    anything else is left as it is.
    """
    if _plain_tcp(transport):
        transport.bufferSize = READ_SIZE
        transport.SEND_LIMIT = SEND_LIMIT
        transport.setTcpNoDelay(True)
        setattr(transport, RELAY_MARK, True)


def writable_now(transport: Any) -> bool:
    """
    C{transport} is plain TCP, open, and holds nothing unsent: bytes may go
    straight to its socket without overtaking any.
    """
    return bool(  # _plain_tcp inline: runs for every read of either side
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and len(transport.dataBuffer) == transport.offset
    )


def send_now(transport: Any, chunks: Sequence[bytes]) -> None:
    """
    Write C{chunks}, in order, after whatever the transport already holds.

    When nothing is queued and the transport is plain TCP, they go to the
    kernel right away in one C{sendmsg} (no joined copy, no reactor turn);
    what the kernel does not take, and everything for other transports,
    goes through C{transport.write}, so ordering, buffering and producer
    pausing stay Twisted's.
    """
    if writable_now(transport):
        try:
            sent = transport.socket.sendmsg(chunks)
        except OSError:
            # Would block, or the connection is broken: Twisted's buffered
            # write will retry, or find the error and close.
            sent = 0
        for chunk in chunks:
            size = len(chunk)
            if sent >= size:
                sent -= size
                continue
            transport.write(chunk[sent:] if sent else chunk)
            sent = 0
        return
    if len(chunks) == 1:
        transport.write(chunks[0])
    else:
        transport.writeSequence(chunks)


#: Payloads up to this size are unmasked with one integer XOR, which beats
#: setting up Autobahn's vectorised masker (about 0.5 us against 2.4 us for
#: the few bytes of a key press or pointer move; even at 1 KiB).
SMALL_PAYLOAD = 1024


def unmask(mask: bytes, payload: memoryview) -> bytes:
    """
    C{payload} XORed with the repeated 4-byte C{mask} (RFC 6455 section
    5.3).
    """
    length = len(payload)
    if length > SMALL_PAYLOAD:
        if _nvx_lib is None:
            unmasked: bytes = create_xor_masker(mask, length).process(payload)
            return unmasked
        # Autobahn's C masker called directly: one copy, XORed in place.
        # Its wrapper (create_xor_masker) adds a Python object with a
        # finaliser, a zeroed buffer and a second copy per frame: 3.1
        # against 1.4 us for 16 KiB, the upload benchmark's message.
        data = bytearray(payload)
        masker = _nvx_lib.nvx_xormask_new(mask)  # copies the mask
        try:
            _nvx_lib.nvx_xormask_process(masker, _nvx_ffi.from_buffer(data), length)
        finally:
            _nvx_lib.nvx_xormask_free(masker)
        return bytes(data)
    key = (mask * ((length >> 2) + 1))[:length]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(length, "little")


#: Headers of binary frames under 126 bytes, made once.
_SHORT_HEADERS = [bytes((_OPCODE_BINARY_FIN, n)) for n in range(126)]


def binary_frame_header(length: int) -> bytes:
    """
    The header of an unmasked, final, binary WebSocket frame of C{length}
    payload bytes (RFC 6455 section 5.2): what a server sends.
    """
    if length < 126:
        return _SHORT_HEADERS[length]
    if length < 65536:
        return bytes((_OPCODE_BINARY_FIN, 126)) + length.to_bytes(2, "big")
    return bytes((_OPCODE_BINARY_FIN, 127)) + length.to_bytes(8, "big")


class BinaryFrameReader:
    """
    Takes complete, masked, final binary frames off the front of what the
    browser sent and hands their unmasked payloads on; stops at the first
    byte that is anything else and returns the rest, for Autobahn.

    A binary frame cut by the end of a read (a 16 KiB upload message nearly
    always is: reads are 124 KiB) is held and finished on the next read,
    so that Autobahn's per-frame machinery does not take one frame in
    every read (about a quarter of the proxy's upload time, docs/
    performance.md). If the held bytes turn out not to start such a frame
    (a cut header that completes as something else), they go to Autobahn
    ahead of the read.

    @param deliver: called once per read with the payloads, in order.
    @param max_payload: frames longer than this are left to Autobahn, which
        refuses them.
    """

    def __init__(
        self, deliver: Callable[[list[bytes]], None], max_payload: int
    ) -> None:
        self._deliver = deliver
        self._max_payload = max_payload
        #: The start of a cut frame, in pieces, and its mask offset and
        #: end (relative to its first byte) once its header is complete.
        self._held: list[bytes] = []
        self._held_size = 0
        self._held_frame: tuple[int, int] | None = None

    @property
    def holding(self) -> bool:
        """Part of a frame is held, waiting for the rest."""
        return bool(self._held)

    def release(self) -> bytes:
        """The held bytes, given up (for Autobahn once the fast path stops)."""
        held = b"".join(self._held)
        self._held, self._held_size, self._held_frame = [], 0, None
        return held

    def feed(self, data: bytes) -> bytes:
        """
        Deliver the complete binary frames at the start of C{data} (after
        any frame held from the last read); hold a binary frame cut at the
        end; return the bytes from the first frame that is not one.
        """
        payloads: list[bytes] = []
        pos = 0
        if self._held:
            finished = self._finish_held(data, payloads)
            if finished is None:
                return self.release() + data
            pos = finished
        size = len(data)
        view = memoryview(data)
        cut = False
        while size - pos >= 6:
            if data[pos] != _OPCODE_BINARY_FIN:
                break
            second = data[pos + 1]
            if not second & _MASKED:
                break
            length = second & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if size - pos < 8:
                    cut = True
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                if length < 126:
                    break  # not minimal: Autobahn names the violation
                start = pos + 4
            else:
                if size - pos < 14:
                    cut = True
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length < 65536:
                    break
                start = pos + 10
            if length > self._max_payload:
                break
            end = start + 4 + length
            if end > size:
                self._held_frame = (start - pos, end - pos)
                cut = True
                break
            if length:
                payloads.append(unmask(data[start : start + 4], view[start + 4 : end]))
            pos = end
        else:
            # Fewer than 6 bytes left: a cut header, if they may start one.
            cut = pos < size and self._header(data[pos:]) is not None
        if cut:
            self._held = [data[pos:]]
            self._held_size = size - pos
            pos = size
        if payloads:
            self._deliver(payloads)
        return data[pos:] if pos else data

    def _header(self, head: bytes) -> tuple[int, int] | Literal[True] | None:
        """
        The mask offset and end of the frame that starts C{head}, L{True}
        while its header is still incomplete, L{None} when it is not a
        frame the fast path takes.
        """
        size = len(head)
        if head[0] != _OPCODE_BINARY_FIN:
            return None
        if size < 2:
            return True
        if not head[1] & _MASKED:
            return None
        length = head[1] & 0x7F
        if length < 126:
            start = 2
        elif length == 126:
            if size < 4:
                return True
            length = int.from_bytes(head[2:4], "big")
            if length < 126:
                return None
            start = 4
        else:
            if size < 10:
                return True
            length = int.from_bytes(head[2:10], "big")
            if length < 65536:
                return None
            start = 10
        if length > self._max_payload:
            return None
        return start, start + 4 + length

    def _finish_held(self, data: bytes, payloads: list[bytes]) -> int | None:
        """
        Complete the held frame from the front of C{data}: the offset in
        C{data} after it (all of C{data} while it is still incomplete), or
        L{None} when the held bytes are not such a frame after all.
        """
        frame = self._held_frame
        if frame is None:
            header = self._header(b"".join(self._held) + data[:14])
            if header is None:
                return None
            if not isinstance(header, tuple):  # the header is still cut
                self._held.append(data)
                self._held_size += len(data)
                return len(data)
            frame = self._held_frame = header
        start, end = frame
        need = end - self._held_size
        if len(data) < need:
            self._held.append(data)
            self._held_size += len(data)
            return len(data)
        whole = b"".join([*self._held, data[:need]])
        self._held, self._held_size, self._held_frame = [], 0, None
        if end > start + 4:
            payloads.append(
                unmask(whole[start : start + 4], memoryview(whole)[start + 4 :])
            )
        return need


_OPEN = WebSocketServerProtocol.STATE_OPEN


class FastWebSocketProtocol(WebSocketServerProtocol):
    """
    Autobahn's WebSocket server protocol with the relay's fast path, and a
    small public face over the Autobahn internals a console needs, so that
    its subclass (L{txvnc.proxy.websocket.ConsoleProxyProtocol}) uses only
    Autobahn's documented callbacks and these methods.

    Internals used: C{_connectionMade} and C{CONFIG_ATTRS},
    C{_dataReceived}, C{data} (the receive buffer),
    C{current_frame}, C{current_frame_masker}, C{inside_message},
    C{state}, C{send_queue}, C{sendCloseFrame}, C{localCloseCode},
    C{localCloseReason} and C{wasNotCleanReason}.
    """

    _frames: BinaryFrameReader | None = None

    def _connectionMade(self) -> None:
        # Autobahn's _connectionMade copies the factory's protocol options
        # onto the protocol, then formats the whole list with
        # pprint.pformat for a debug line, on every connection, whether or
        # not anyone logs debug (about 9 % of the proxy's time while
        # consoles open). Copy them here, the same way, and let Autobahn's
        # loop see an empty list (an instance attribute shadowing the
        # class's): same options, nothing to format. Upstream report text:
        # docs/performance.md, "Opening consoles".
        factory = self.factory
        for name in type(self).CONFIG_ATTRS:
            if not hasattr(self, name):
                setattr(self, name, getattr(factory, name))
        self.CONFIG_ATTRS = []
        super()._connectionMade()

    @property
    def ws_open(self) -> bool:
        """The WebSocket is open: past the handshake, not closing."""
        return bool(self.state == _OPEN)

    def relay_binary_frames(
        self, deliver: Callable[[list[bytes]], None], max_payload: int
    ) -> None:
        """
        From now on, hand the payloads of complete binary frames to
        C{deliver} straight from each read, past Autobahn's per-frame work;
        Autobahn keeps everything else (and calls C{onMessage}).
        """
        self._frames = BinaryFrameReader(deliver, max_payload)

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's adapter builds a debug log line for every read (a few
        # microseconds each, even with debug off); go straight to parsing.
        frames = self._frames
        if frames is not None:
            if self.state == _OPEN:
                data = self._take_binary_frames(frames, data)
                if not data:
                    return
            elif frames.holding:
                # Closing: Autobahn parses everything from now on, starting
                # with the cut frame the fast path held.
                data = frames.release() + data
        self._dataReceived(data)

    def _take_binary_frames(self, frames: BinaryFrameReader, data: bytes) -> bytes:
        """
        Relay the complete binary frames in C{data}; return what Autobahn
        must see. Autobahn finishes any frame or message it has started.
        """
        if self.current_frame is not None:
            need = self.current_frame.length - self.current_frame_masker.pointer()
            if len(data) <= need:
                return data
            self._dataReceived(data[:need])
            data = data[need:]
            if self.state != _OPEN or self.current_frame is not None:
                return data
        if self.inside_message:
            return data
        if self.data:
            data, self.data = self.data + data, b""
        return frames.feed(data)

    def send_binary(self, data: bytes) -> bool:
        """
        Send C{data} as one binary message, its header beside it
        (L{send_now}) unless Autobahn still queues earlier frames; L{False}
        (nothing sent) once the WebSocket is no longer open.
        """
        if self.state != _OPEN:
            return False
        if self.send_queue:
            self.sendMessage(data, isBinary=True)
        else:
            send_now(self.transport, (binary_frame_header(len(data)), data))
        return True

    def send_text(self, text: bytes) -> None:
        """Send C{text} as a text message while the WebSocket is open."""
        if self.state == _OPEN:
            self.sendMessage(text, isBinary=False)

    def close_with(self, code: int, reason: str) -> None:
        """
        Start the closing handshake with any valid code. Autobahn's
        C{sendClose} takes only 1000 and 3000-4999, but a server must also
        be able to say 1003 and 1011 (RFC 6455 section 7.4.1); this is the
        path Autobahn itself takes to fail a connection with such codes.
        """
        if self.state == _OPEN:
            self.sendCloseFrame(
                code=code, reasonUtf8=close_reason(reason).encode("utf-8")
            )

    @property
    def local_close(self) -> tuple[int | None, bytes | None]:
        """The code and reason of the close frame this side sent, if any."""
        return self.localCloseCode, self.localCloseReason

    def unclean_outcome(self) -> str | None:
        """
        How the metrics name a connection Autobahn dropped on a timer:
        C{"handshake_timeout"}, C{"keepalive_timeout"}, or L{None}.
        """
        why = self.wasNotCleanReason or ""
        if "opening handshake timeout" in why:
            return "handshake_timeout"
        if "ping timeout" in why:
            return "keepalive_timeout"
        return None
