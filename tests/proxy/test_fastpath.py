"""
The relay's fast path: frame headers, the binary-frame reader, direct
writes, and mixed browser traffic arriving intact through a real proxy.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct

import pytest
import pytest_twisted
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from txvnc.proxy import fastpath
from txvnc.proxy.fastpath import (
    SMALL_PAYLOAD,
    BinaryFrameReader,
    binary_frame_header,
    send_now,
    unmask,
)

from .harness import Stack
from .memory import MemoryProxy


def frame(payload: bytes, opcode: int = 2, fin: bool = True, masked: bool = True,
          length_form: int | None = None) -> bytes:  # fmt: skip
    """A WebSocket frame built by hand (RFC 6455 section 5.2)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    form = length_form or (0 if n < 126 else 126 if n < 65536 else 127)
    bit = 0x80 if masked else 0
    if form == 0:
        head += bytes([bit | n])
    elif form == 126:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_header(data: bytes) -> tuple[int, int, int]:
    """(first byte, payload length, header length) of an unmasked frame."""
    n = data[1] & 0x7F
    if n == 126:
        return data[0], struct.unpack("!H", data[2:4])[0], 4
    if n == 127:
        return data[0], struct.unpack("!Q", data[2:10])[0], 10
    return data[0], n, 2


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 4 << 20])
def test_frame_header_encodes_length_minimally(length):
    """Server frame headers are final, binary, unmasked and use the shortest length form."""
    header = binary_frame_header(length)
    first, decoded, size = read_header(header)
    assert (first, decoded, len(header)) == (0x82, length, size)
    assert size == (2 if length < 126 else 4 if length < 65536 else 10)


@pytest.mark.parametrize(
    "length", [0, 1, 2, 3, 4, 5, 6, 63, 64, SMALL_PAYLOAD - 1, SMALL_PAYLOAD,
               SMALL_PAYLOAD + 1, 70000],
)  # fmt: skip
@pytest.mark.parametrize("nvx", [True, False], ids=["nvx-direct", "autobahn-masker"])
def test_unmask_agrees_with_the_rfc_on_both_sides_of_the_small_payload_cut(
    length, nvx, monkeypatch
):
    """Small (integer XOR) and large (Autobahn's C masker called directly, or its Python wrapper without it) payloads unmask byte for byte as RFC 6455 says."""
    if not nvx:
        monkeypatch.setattr(fastpath, "_nvx_lib", None)
    mask, payload = os.urandom(4), os.urandom(length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert unmask(mask, memoryview(masked)) == payload


def reader():
    got: list[bytes] = []
    return BinaryFrameReader(got.extend, 1 << 20), got


def test_reader_delivers_complete_binary_frames_and_returns_the_rest():
    """Complete binary frames are unmasked and delivered; a ping and all after it are returned."""
    r, got = reader()
    a, b, c = os.urandom(10), os.urandom(300), os.urandom(70000)
    ping = frame(b"hi", opcode=9)
    rest = r.feed(frame(a) + frame(b) + frame(c) + ping + frame(a))
    assert got == [a, b, c]
    assert rest == ping + rest[len(ping) :] and len(rest) > len(ping)


@pytest.mark.parametrize(
    "data",
    [
        frame(b"text", opcode=1),
        frame(b"part", fin=False),
        frame(b"cont", opcode=0),
        frame(b"plain", masked=False),
        frame(b"short", length_form=126),
        frame(b"x" * 200, length_form=127),
        frame(b"x" * ((1 << 20) + 1)),
        frame(b"x" * ((1 << 20) + 1))[:5000],
        b"\x82\x7e\x01",
        b"\x81",
    ],
    ids=["text", "not-final", "continuation", "unmasked", "non-minimal-16",
         "non-minimal-64", "too-big", "too-big-incomplete", "unmasked-cut-header",
         "text-cut-header"],
)  # fmt: skip
def test_reader_leaves_anything_else_to_autobahn(data):
    """Frames the fast path does not handle come back untouched and nothing is delivered."""
    r, got = reader()
    assert r.feed(data) == data
    assert got == []


def test_reader_holds_a_binary_frame_cut_by_the_read_and_finishes_it():
    """
    A binary frame cut by the end of a read, wherever the cut falls (in the
    header, the mask or the payload), is held and delivered by the fast
    path once the next read completes it: Autobahn sees none of it.
    """
    payloads = [os.urandom(n) for n in (10, 300, 16384, 70000, 5)]
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(
        {1, 2, 3, 5, 7, 9, 13, 15, 320, 330, 16700, 16720, 87000, len(stream) - 3}
    )
    r, got = reader()
    last = 0
    for cut in [*cuts, len(stream)]:
        assert r.feed(stream[last:cut]) == b""
        last = cut
    assert got == payloads
    assert r.release() == b""


def test_reader_gives_autobahn_a_held_frame_that_turns_out_not_to_be_one():
    """Bytes held for a cut header that completes as something the fast path does not take go to Autobahn, held bytes first."""
    r, got = reader()
    too_big = frame(b"x" * ((1 << 20) + 1))
    assert r.feed(too_big[:2]) == b""
    assert r.feed(too_big[2:5000]) == too_big[:5000]
    assert got == []
    non_minimal = frame(b"short", length_form=126)
    assert r.feed(non_minimal[:3]) == b""
    assert r.feed(non_minimal[3:]) == non_minimal


def test_reader_releases_what_it_holds():
    """release() gives back the held bytes of a cut frame, once."""
    r, got = reader()
    cut = frame(os.urandom(1000))[:-1]
    assert r.feed(cut) == b""
    assert r.holding
    assert r.release() == cut
    assert not r.holding and r.release() == b""
    assert got == []


def test_send_now_falls_back_to_write_on_other_transports():
    """On a transport that is not plain TCP the chunks are written in order through the transport."""
    transport = StringTransport()
    send_now(transport, [b"ab", b"cd"])
    send_now(transport, [b"ef"])
    assert transport.value() == b"abcdef"


@pytest.fixture
def stack():
    s = Stack()
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_mixed_browser_traffic_arrives_intact(stack, vnc):
    """Whole, fragmented, empty and large binary messages mixed with pings reach the VNC server in order, unchanged."""
    rng = random.Random(5)
    token = await stack.mint(vnc.address.port)
    connected = vnc.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    server_side = await connected
    expected = hashlib.sha256()
    total = 0
    for i in range(600):
        size = rng.choice([0, 1, 64, 125, 126, 1000, 16384, 65535, 65536, 200_000])
        payload = os.urandom(size)
        expected.update(payload)
        total += size
        if i % 7 == 3:
            browser.sendMessage(
                payload, isBinary=True, fragmentSize=rng.randint(1, 5000)
            )
        else:
            browser.sendMessage(payload, isBinary=True)
        if i % 11 == 0:
            browser.sendPing(os.urandom(8))
    await vnc.received_at_least(total)
    assert server_side.received == total
    assert server_side.sha.hexdigest() == expected.hexdigest()
    assert browser.state == WebSocketProtocol.STATE_OPEN


@pytest_twisted.ensureDeferred
async def test_a_frame_held_when_the_proxy_starts_closing_goes_to_autobahn():
    """
    A binary frame cut by a read just before the proxy starts the closing
    handshake reaches Autobahn whole, held bytes first, so the browser's
    close frame after it ends the connection cleanly.
    """
    proxy = MemoryProxy()
    browser = proxy.browser(f"token={await proxy.mint()}")
    assert browser.opened.called
    (console,) = proxy.factory.consoles
    server_side = console.transport.protocol
    cut = frame(os.urandom(3000))
    server_side.dataReceived(cut[:1000])
    server_side.close_with(1000, "bye")
    server_side.dataReceived(cut[1000:] + frame(struct.pack("!H", 1000), opcode=8))
    proxy.flush()
    assert server_side.wasClean, server_side.wasNotCleanReason


def test_autobahn_use_nvx_0_keeps_the_fast_path_off_the_nvx_masker():
    """
    AUTOBAHN_USE_NVX=0 (an operator turning Autobahn's compiled code off)
    holds for the fast path's masker too: it unmasks with Autobahn's
    pure-Python masker, as Autobahn does.
    """
    import subprocess
    import sys

    probe = "from txvnc.proxy import fastpath; print(fastpath._nvx_lib is None)"
    for value, off in (("0", "True"), ("", "False")):
        env = {**os.environ, "AUTOBAHN_USE_NVX": value}
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True
        )
        assert out.stdout.strip() == off, out.stderr
