"""
A recorded handshake made playable without a VNC server
(txvnc.rfb.replay): whatever security the recorded server asked for, the
replay starts with RFB 3.8 and security None, then the recorded ServerInit.
"""

from __future__ import annotations

import struct

import pytest

from txvnc.rfb.replay import (
    NONE_HANDSHAKE,
    NotReplayable,
    replayable,
    server_init_offset,
)

PIXEL_FORMAT = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
SERVER_INIT = struct.pack("!HH", 640, 480) + PIXEL_FORMAT + struct.pack("!I", 4) + b"test"
UPDATE = b"\x00\x00\x00\x01" + b"\x00" * 12
OK = b"\0\0\0\0"


@pytest.mark.parametrize(
    "handshake",
    [
        pytest.param(b"RFB 003.008\n\x01\x01" + OK, id="3.8 None"),
        pytest.param(b"RFB 003.008\n\x01\x02" + b"C" * 16 + OK, id="3.8 VNC auth"),
        pytest.param(b"RFB 003.008\n\x02\x02\x01" + b"C" * 16 + OK, id="3.8 both, VNC auth chosen"),
        pytest.param(b"RFB 003.008\n\x02\x02\x01" + OK, id="3.8 both, None chosen"),
        pytest.param(b"RFB 003.007\n\x01\x01", id="3.7 None"),
        pytest.param(b"RFB 003.003\n\x00\x00\x00\x02" + b"C" * 16 + OK, id="3.3 VNC auth"),
        pytest.param(b"RFB 003.003\n\x00\x00\x00\x01", id="3.3 None"),
    ],
)
def test_every_recorded_handshake_becomes_security_none(handshake: bytes) -> None:
    """The recorded security exchange gives way to RFB 3.8 with security None; the ServerInit and what follows are kept, chunk by chunk."""
    stream = handshake + SERVER_INIT + UPDATE
    assert server_init_offset(stream) == len(handshake)
    # Recorded in small reads, as a relay sees them.
    chunks = [stream[i : i + 5] for i in range(0, len(stream), 5)]
    out = replayable(chunks)
    assert len(out) == len(chunks)
    assert b"".join(out) == NONE_HANDSHAKE + SERVER_INIT + UPDATE
    # No chunk was merged into another: the timings stay where they were.
    assert all(out[i] == b"" for i in range(len(handshake) // 5))


def test_what_cannot_be_seen_through_is_refused() -> None:
    """A stream without an RFB version, a refused connection, VeNCrypt or a cut-short handshake is not replayable."""
    for stream in (
        b"HTTP/1.1 200 OK\r\n",
        b"RFB 003.008\n\x00",
        b"RFB 003.008\n\x01\x13" + b"\x00\x02" * 10,
        b"RFB 003.008\n\x01\x01" + OK + SERVER_INIT[:10],
    ):
        with pytest.raises(NotReplayable):
            replayable([stream])
