"""
Handshake abuse against a real C{twistd txvnc}: whatever arrives instead of
a proper upgrade is refused with a status or dropped, quietly (nothing at
error level), and a good console opened meanwhile keeps working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.hostile.conftest import NO_GUARD, Backend, echo_check, run
from tests.hostile.wsclient import WSClient, upgrade_request
from tests.support.twistd import Twistd, start_twistd

#: --handshake-timeout for this module's proxy: the time a client has to
#: send its request headers, and again to finish the upgrade.
HANDSHAKE_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def txvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    The module's C{twistd txvnc}, with a short handshake timeout.
    """
    server = start_twistd(
        tmp_path_factory.mktemp("txvnc"),
        *NO_GUARD,
        "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
    )  # fmt: skip
    yield server
    server.stop()


async def exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """
    Send C{data}, then read until the proxy closes the connection.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        chunks = []
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), timeout):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)
    finally:
        writer.close()


def status_line(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode("latin-1")


def upgrade(server: Twistd, path: str, **headers: str) -> bytes:
    return upgrade_request(f"127.0.0.1:{server.proxy_port}", path, headers)


CASES = {
    # name: (request bytes given the server, expected status line)
    "plain GET on the WebSocket path": (
        lambda s: b"GET /websockify HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 404 Not Found",
    ),
    "upgrade without Sec-WebSocket-Key": (
        lambda s: b"GET /websockify?token=x HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
        "HTTP/1.1 400 HTTP Sec-WebSocket-Key header missing",
    ),
    "upgrade without Connection: Upgrade": (
        lambda s: upgrade(s, "/websockify?token=x").replace(
            b"Connection: Upgrade\r\n", b""
        ),
        "HTTP/1.1 400 HTTP Connection header missing",
    ),
    "upgrade with POST": (
        lambda s: upgrade(s, "/websockify?token=x").replace(b"GET", b"POST", 1),
        'HTTP/1.1 405 HTTP method "POST" not allowed',
    ),
    "upgrade without a token": (
        lambda s: upgrade(s, "/websockify"),
        "HTTP/1.1 403 The token is invalid or has expired",
    ),
    "upgrade with an unknown token": (
        lambda s: upgrade(s, "/websockify?token=not-a-token"),
        "HTTP/1.1 403 The token is invalid or has expired",
    ),
    "upgrade with a token of 100 KiB": (
        lambda s: upgrade(s, "/websockify?token=" + "a" * 100_000),
        "HTTP/1.1 414 URI Too Long",  # over the 16 KiB line limit
    ),
    "upgrade from a foreign origin": (
        lambda s: upgrade(s, "/websockify?token=x", Origin="http://evil.example"),
        "HTTP/1.1 403 Origin not allowed",
    ),
    "upgrade with a malformed origin": (
        lambda s: upgrade(s, "/websockify?token=x", Origin="ht tp://::::"),
        ("HTTP/1.1 400 HTTP Origin header invalid: No host part in Origin "
        "'ht tp://::::'"),
    ),
    "text garbage": (lambda s: b"GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    "NUL bytes": (lambda s: b"\0" * 1000 + b"\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    "600 headers": (
        lambda s: b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: y\r\n" % i for i in range(600))
        + b"\r\n",
        "HTTP/1.1 400 Bad Request",
    ),
    "a 70 KiB header": (
        lambda s: b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        "HTTP/1.1 431 Request Header Fields Too Large",  # over 16 KiB
    ),
    "64 KiB of headers in small lines": (
        lambda s: b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 200) for i in range(320))
        + b"\r\n",
        "HTTP/1.1 400 Bad Request",
    ),
    "a request body on the proxy": (
        lambda s: b"POST /vnc_auto.html HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 10000000000\r\n\r\n",
        "HTTP/1.1 413 Content Too Large",
    ),
    "a chunked request body on the proxy": (
        lambda s: b"POST /vnc_auto.html HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 411 Length Required",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_handshake_is_refused_quietly(txvnc: Twistd, backend: Backend, name: str):
    """Each bad request gets its exact refusal (over-long lines too, read to the end rather than reset), the connection is closed, nothing is logged at error level, and a good console still works."""
    make, expected = CASES[name]
    since = txvnc.log.mark()

    async def scenario() -> bytes:
        answer = await exchange(txvnc.proxy_port, make(txvnc))
        await echo_check(txvnc, backend, f"after-{name.replace(' ', '-')}")
        return answer

    answer = run(scenario())
    assert status_line(answer) == expected
    assert txvnc.loud_lines(since) == []


def test_slowloris_is_dropped_while_a_console_works(txvnc: Twistd, backend: Backend):
    """An upgrade sent one byte a second is cut off with 408 at the handshake timeout, while a console opened meanwhile relays normally."""
    since = txvnc.log.mark()
    request = upgrade(txvnc, "/websockify?token=slow") * 4

    async def slowloris() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", txvnc.proxy_port)
        started = time.monotonic()
        try:
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(65536), 1.0)
                except TimeoutError:
                    continue
                return answer + await reader.read(), time.monotonic() - started
        except ConnectionError:
            return b"", time.monotonic() - started
        finally:
            writer.close()
        raise AssertionError("the whole slow request was read without an answer")

    async def scenario() -> tuple[bytes, float]:
        slow = asyncio.ensure_future(slowloris())
        await echo_check(txvnc, backend, "beside-slowloris")
        return await slow

    answer, took = run(scenario(), timeout=HANDSHAKE_TIMEOUT + 60)
    assert status_line(answer) == "HTTP/1.1 408 Request Timeout"
    assert HANDSHAKE_TIMEOUT - 1 <= took <= HANDSHAKE_TIMEOUT + 15
    assert txvnc.loud_lines(since) == []


def test_many_half_open_upgrades_are_dropped_while_consoles_work(
    txvnc: Twistd, backend: Backend
):
    """400 upgrades that stop half-way through their headers and 100 TLS hellos sent to the plain port hold no console back and are all answered 408 at the handshake timeout, logged at info."""
    since = txvnc.log.mark()
    half = upgrade(txvnc, "/websockify?token=half")[:60]
    # No line end anywhere: Twisted waits for one until the deadline.
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(10)) * 20

    async def half_open(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", txvnc.proxy_port)
        writer.write(data)
        try:
            return await reader.read()
        finally:
            writer.close()

    async def scenario() -> list[bytes]:
        held = [asyncio.ensure_future(half_open(half)) for _ in range(400)]
        held += [asyncio.ensure_future(half_open(hello)) for _ in range(100)]
        for i in range(5):
            await echo_check(txvnc, backend, f"beside-half-open-{i}")
        return await asyncio.gather(*held)

    started = time.monotonic()
    answers = run(scenario(), timeout=HANDSHAKE_TIMEOUT + 60)
    took = time.monotonic() - started
    statuses = {status_line(a) for a in answers}
    assert statuses == {"HTTP/1.1 408 Request Timeout"}
    # Generous: 500 connections and five consoles on a busy 2-core machine.
    assert took <= HANDSHAKE_TIMEOUT + 30
    # The 500 lines are written as the answers go out; the log reader may
    # still be a few lines behind the last answer.
    def dropped() -> list[str]:
        return [
            line
            for line in txvnc.log.lines(since)
            if "#info] dropped 127.0.0.1:" in line and "no complete request" in line
        ]

    deadline = time.monotonic() + 10
    while len(dropped()) < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(dropped()) == 500
    assert txvnc.loud_lines(since) == []


def test_upgrade_that_never_completes_the_token_check_is_cut(txvnc: Twistd):
    """An upgrade whose client leaves while its token is being checked leaves no console and no error behind."""
    since = txvnc.log.mark()

    async def scenario() -> None:
        for _ in range(20):
            client = await WSClient.open_tcp("127.0.0.1", txvnc.proxy_port)
            client.send(upgrade(txvnc, "/websockify?token=leaving"))
            await client.drain()
            client.transport.abort()

    run(scenario())
    assert txvnc.loud_lines(since) == []


API_CASES = {
    "a body over 64 KiB": (
        lambda key: b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + key + b"\r\n"
        b"Content-Length: 65537\r\n\r\n",
        "HTTP/1.1 413 Content Too Large",
    ),
    "a body of 10 GB without a key": (
        lambda key: b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 10000000000\r\n\r\n",
        "HTTP/1.1 413 Content Too Large",
    ),
    "a chunked body": (
        lambda key: b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + key + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 411 Length Required",
    ),
    "a wrong key": (
        lambda key: b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + key[::-1] + b"\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        "HTTP/1.1 401 Unauthorized",
    ),
    "garbage": (lambda key: b"GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request"),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_token_api_refuses_abuse_before_reading_it(txvnc: Twistd, name: str):
    """The token API refuses oversized, chunked, unauthenticated or garbled requests with their status and stays quiet."""
    make, expected = API_CASES[name]
    since = txvnc.log.mark()
    answer = run(exchange(txvnc.api_port, make(txvnc.api_key.encode())))
    assert status_line(answer) == expected
    assert txvnc.loud_lines(since) == []


def test_frames_sent_before_the_101_are_dropped_whole(txvnc: Twistd, backend: Backend):
    """Frames sent in the same packet as the upgrade request, before the 101 (RFC 6455 4.1 says to wait), are dropped whole: none reaches the VNC server, and the console then relays normally."""
    from tests.hostile.wsclient import encode_frame

    token = txvnc.mint("127.0.0.1", backend.port)

    async def scenario() -> bytes:
        client = await WSClient.open_tcp("127.0.0.1", txvnc.proxy_port)
        early = encode_frame(b"ECHO early-data\n") + encode_frame(b"early")
        client.send(upgrade(txvnc, f"/websockify?token={token}") + early)
        response = await client.read_response()
        assert response.status == 101
        client.send_frame(b"ECHO after-early-data\n")
        client.send_frame(b"after")
        got = (await client.read_frame()).payload
        client.close()
        return got

    assert run(scenario()) == b"after"
    backend.wait("open", "after-early-data")
    assert not any("early-data" in line and "after" not in line for line in backend.log.lines())
