"""
Frame abuse on an open console against a real C{twistd txvnc}: each
violation gets its close code, the VNC connection behind it is closed, and
the service keeps serving everyone else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tests.hostile.conftest import Backend, echo_check, open_console, run
from tests.hostile.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    WSClient,
    close_payload,
    encode_frame,
)
from tests.support.twistd import Twistd

#: The proxy's message and frame limit (txvnc.proxy.limits.Limits.max_message_size).
LIMIT = 4 * 1024 * 1024

PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009

Abuse = Callable[[WSClient], None]


def unmasked(c: WSClient) -> None:
    c.send(encode_frame(b"hello", mask=False))


def rsv(bits: int) -> Abuse:
    return lambda c: c.send_frame(b"hello", rsv=bits)


def opcode(op: int) -> Abuse:
    return lambda c: c.send_frame(b"hello", op)


def text(c: WSClient) -> None:
    c.send_frame(b"hello", OP_TEXT)


def invalid_utf8_text(c: WSClient) -> None:
    c.send_frame(b"\xff\xfe", OP_TEXT)


def huge_frame_header(c: WSClient) -> None:
    # Only the header: the length alone must end it.
    c.send(encode_frame(b"", length=1 << 40)[:-4] + c.mask_key)


def frame_over_limit(c: WSClient) -> None:
    c.send_frame(b"\0" * (LIMIT + 1))


def message_over_limit(c: WSClient) -> None:
    piece = b"\0" * (1024 * 1024)
    c.send_frame(piece, OP_BINARY, fin=False)
    for _ in range(4):
        c.send_frame(piece, OP_CONT, fin=False)
    c.send_frame(piece, OP_CONT, fin=True)


def close_with(payload: bytes) -> Abuse:
    return lambda c: c.send_frame(payload, OP_CLOSE)


def big_ping(c: WSClient) -> None:
    c.send_frame(b"p" * 126, OP_PING)


def fragmented_ping(c: WSClient) -> None:
    c.send_frame(b"p", OP_PING, fin=False)


def stray_continuation(c: WSClient) -> None:
    c.send_frame(b"hello", OP_CONT)


def interleaved_data(c: WSClient) -> None:
    c.send_frame(b"one", OP_BINARY, fin=False)
    c.send_frame(b"two", OP_BINARY)


def compressed_frame(c: WSClient) -> None:
    # A deflated "hello" marked with RSV1, as if permessage-deflate had been
    # agreed: it was not, so RSV1 is a protocol error.
    c.send_frame(bytes.fromhex("f248cdc9c90700"), rsv=4)


CASES: dict[str, tuple[Abuse, int]] = {
    "unmasked frame": (unmasked, PROTOCOL_ERROR),
    "RSV1 set": (rsv(4), PROTOCOL_ERROR),
    "RSV2 set": (rsv(2), PROTOCOL_ERROR),
    "RSV3 set": (rsv(1), PROTOCOL_ERROR),
    "reserved data opcode 3": (opcode(3), PROTOCOL_ERROR),
    "reserved control opcode 0xB": (opcode(0xB), PROTOCOL_ERROR),
    "text frame on a binary console": (text, UNSUPPORTED_DATA),
    "text frame that is not UTF-8": (invalid_utf8_text, INVALID_PAYLOAD),
    "frame header claiming 1 TiB": (huge_frame_header, MESSAGE_TOO_BIG),
    "frame one byte over the limit": (frame_over_limit, MESSAGE_TOO_BIG),
    "message of 6 fragments over the limit": (message_over_limit, MESSAGE_TOO_BIG),
    "close code 999": (close_with(close_payload(999)), PROTOCOL_ERROR),
    "close code 1005 (reserved)": (close_with(close_payload(1005)), PROTOCOL_ERROR),
    "close code 1006 (reserved)": (close_with(close_payload(1006)), PROTOCOL_ERROR),
    "close code 1015 (reserved)": (close_with(close_payload(1015)), PROTOCOL_ERROR),
    "close code 2999 (unassigned)": (close_with(close_payload(2999)), PROTOCOL_ERROR),
    "close code 5000": (close_with(close_payload(5000)), PROTOCOL_ERROR),
    "close frame of one byte": (close_with(b"\x03"), PROTOCOL_ERROR),
    "close reason that is not UTF-8": (
        close_with(close_payload(1000, b"\xff\xfe")),
        INVALID_PAYLOAD,
    ),
    "ping over 125 bytes": (big_ping, PROTOCOL_ERROR),
    "fragmented ping": (fragmented_ping, PROTOCOL_ERROR),
    "continuation with nothing to continue": (stray_continuation, PROTOCOL_ERROR),
    "new message inside a fragmented one": (interleaved_data, PROTOCOL_ERROR),
    "compressed frame never negotiated": (compressed_frame, PROTOCOL_ERROR),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_frame_abuse_gets_its_close_code(txvnc: Twistd, backend: Backend, name: str):
    """Each violation is answered with its close code, the VNC connection is closed, the console's close line names the code, nothing is logged at error level, and a new console works."""
    abuse, code = CASES[name]
    tag = "frames-" + name.replace(" ", "-")
    since, backend_since = txvnc.log.mark(), backend.log.mark()
    # After the browser's own close frame, however wrong, Autobahn sends its
    # close frame and resets the connection at once: the reset can overtake
    # the frame, so there the proxy's log line is the witness.
    sent_close = name.startswith("close")

    port = 0

    async def scenario() -> int | None:
        nonlocal port
        client, _ = await open_console(txvnc, backend, f"ECHO {tag}")
        port = client.local_port
        try:
            backend.wait("open", tag, backend_since)
            abuse(client)
            try:
                frame = await client.expect_close()
            except EOFError:
                if not sent_close:
                    raise
                return None
        finally:
            client.close()
        await echo_check(txvnc, backend, tag + "-after")
        return frame.close_code

    got = run(scenario())
    if got is not None or not sent_close:
        assert got == code
    backend.wait("closed", tag, backend_since)
    why = txvnc.close_reason(port, since)
    if code == UNSUPPORTED_DATA:
        assert why == "text message on a binary console"
    else:
        assert why.startswith(f"closed by the proxy ({code}: ")
    assert txvnc.loud_lines(since) == []


def test_permessage_deflate_offer_is_not_accepted(txvnc: Twistd, backend: Backend):
    """A permessage-deflate offer is answered without the extension, so no compressed frame is ever accepted."""
    token = txvnc.mint("127.0.0.1", backend.port)

    async def scenario() -> dict[str, str]:
        client, response = await WSClient.connect(
            "127.0.0.1",
            txvnc.proxy_port,
            f"/websockify?token={token}",
            headers={
                "Sec-WebSocket-Extensions": "permessage-deflate; "
                "client_max_window_bits, x-webkit-deflate-frame"
            },
        )
        client.close()
        assert response.status == 101
        return response.headers

    headers = run(scenario())
    assert "sec-websocket-extensions" not in headers


def test_clean_close_from_the_browser_closes_the_vnc_side(
    txvnc: Twistd, backend: Backend
):
    """A browser's close 1000 is echoed and the VNC connection is closed."""
    tag = "frames-clean-close"
    backend_since = backend.log.mark()

    async def scenario() -> int | None:
        client, _ = await open_console(txvnc, backend, f"ECHO {tag}")
        backend.wait("open", tag, backend_since)
        client.send_frame(struct.pack("!H", 1000), OP_CLOSE)
        frame = await client.expect_close()
        client.close()
        return frame.close_code

    assert run(scenario()) == 1000
    backend.wait("closed", tag, backend_since)
