"""
The limits an operator sets (ops, issue 6), against a real C{twistd txvnc}:
a flood past --max-connections, a browser that vanishes without a close
(--keepalive-*), a console left idle (--idle-timeout), and messages over
--max-message-size. Each ends only what it should, with its close code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.hostile.conftest import NO_GUARD, Backend, echo_check, open_console, run
from tests.hostile.wsclient import OP_BINARY, OP_CONT, WSClient
from tests.support.twistd import Twistd, start_twistd

MAX_CONNECTIONS = 10
KEEPALIVE_INTERVAL = 1.0
KEEPALIVE_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0
MAX_MESSAGE = 64 * 1024


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    A proxy that takes at most MAX_CONNECTIONS consoles.
    """
    server = start_twistd(
        tmp_path_factory.mktemp("limited"),
        *NO_GUARD,
        "--max-connections", str(MAX_CONNECTIONS),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    A proxy with a short keepalive and a small message limit.
    """
    server = start_twistd(
        tmp_path_factory.mktemp("strict"),
        *NO_GUARD,
        "--keepalive-interval", str(KEEPALIVE_INTERVAL),
        "--keepalive-timeout", str(KEEPALIVE_TIMEOUT),
        "--max-message-size", str(MAX_MESSAGE),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    A proxy with a short idle timeout (and the default keepalive), apart
    from the short keepalive so the two never race.
    """
    server = start_twistd(
        tmp_path_factory.mktemp("idle"), *NO_GUARD, "--idle-timeout", str(IDLE_TIMEOUT)
    )
    yield server
    server.stop()


def test_flood_past_max_connections(limited: Twistd, backend: Backend):
    """With --max-connections 10 full, 200 more upgrades are each closed with 1013 while the 10 open consoles keep relaying; a freed slot is taken again."""
    since = limited.log.mark()
    tokens = [limited.mint("127.0.0.1", backend.port) for _ in range(200)]

    async def scenario() -> list[int | None]:
        held = []
        for i in range(MAX_CONNECTIONS):
            client, _ = await open_console(limited, backend, f"ECHO limit-held-{i}")
            held.append(client)

        async def extra(token: str) -> int | None:
            client, response = await WSClient.connect(
                "127.0.0.1", limited.proxy_port, f"/websockify?token={token}"
            )
            try:
                if response.status != 101:
                    return response.status
                return (await client.expect_close()).close_code
            finally:
                client.close()

        codes = await asyncio.gather(*(extra(token) for token in tokens))
        for i, client in enumerate(held):
            client.send_frame(b"still %d" % i)
            assert (await client.read_frame()).payload == b"still %d" % i
        for client in held:
            client.close()
        return codes, [c.local_port for c in held]

    codes, ports = run(scenario(), timeout=300)
    assert set(codes) == {1013}
    # Once the proxy has closed the held consoles, their slots are free again.
    for port in ports:
        limited.close_reason(port, since)
    run(echo_check(limited, backend, "limit-after"))
    assert limited.loud_lines(since) == []


def test_browser_that_vanishes_is_dropped_by_keepalive(strict: Twistd, backend: Backend):
    """A browser that stops answering (no close, no pong) is dropped once a keepalive ping goes unanswered for --keepalive-timeout, and its VNC connection is closed."""
    tag = "keepalive-vanish"
    since, backend_since = strict.log.mark(), backend.log.mark()

    async def scenario() -> tuple[int, float]:
        client, _ = await open_console(strict, backend, f"ECHO {tag}")
        client.auto_pong = False  # the browser is gone: nothing answers
        await asyncio.to_thread(backend.wait, "open", tag, backend_since)
        started = time.monotonic()
        await asyncio.to_thread(backend.wait, "closed", tag, backend_since, 30)
        took = time.monotonic() - started
        client.close()
        return client.local_port, took

    port, took = run(scenario())
    assert took <= KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT + 5
    assert strict.close_reason(port, since) == "no answer to a keepalive ping"
    assert strict.loud_lines(since) == []


def test_browser_that_answers_pings_stays(strict: Twistd, backend: Backend):
    """A browser that answers the keepalive pings keeps its console past several keepalive timeouts."""
    tag = "keepalive-stay"

    async def scenario() -> int:
        client, _ = await open_console(strict, backend, f"ECHO {tag}")
        # Wait for pings, not for time: each echo reads whatever comes, and
        # the client answers the pings among it.
        while client.pings < 2 * KEEPALIVE_TIMEOUT / KEEPALIVE_INTERVAL:
            client.send_frame(b"ping me")
            assert (await client.read_frame()).payload == b"ping me"
        client.close()
        return client.pings

    assert run(scenario()) >= 4


def test_idle_console_is_closed_with_4002(idle: Twistd, backend: Backend):
    """A console without keyboard, mouse or clipboard input for --idle-timeout is closed with 4002 and its VNC connection closed."""
    tag = "idle"
    since, backend_since = idle.log.mark(), backend.log.mark()

    async def scenario() -> tuple[int | None, float]:
        client, _ = await open_console(idle, backend, f"ECHO {tag}")
        started = time.monotonic()
        frame = await client.expect_close(timeout=IDLE_TIMEOUT + 30)
        client.close()
        return frame.close_code, time.monotonic() - started

    code, took = run(scenario())
    assert code == 4002
    assert IDLE_TIMEOUT - 1 <= took <= IDLE_TIMEOUT + 5
    backend.wait("closed", tag, backend_since)
    assert idle.loud_lines(since) == []


@pytest.mark.parametrize(
    "name, frames",
    [
        ("one frame over the limit", [(b"\0" * (MAX_MESSAGE + 1), OP_BINARY, True)]),
        (
            "two fragments over the limit",
            [
                (b"\0" * (MAX_MESSAGE // 2 + 1), OP_BINARY, False),
                (b"\0" * (MAX_MESSAGE // 2 + 1), OP_CONT, True),
            ],
        ),
    ],
)
def test_message_over_max_message_size_gets_1009(
    strict: Twistd, backend: Backend, name: str, frames: list[tuple[bytes, int, bool]]
):
    """A frame or message over --max-message-size closes the console with 1009; one of exactly the limit is relayed."""
    tag = "max-message-" + name.replace(" ", "-")

    async def scenario() -> int | None:
        client, _ = await open_console(strict, backend, f"ECHO {tag}")
        exact = b"x" * MAX_MESSAGE
        client.send_frame(exact)
        got = b""
        while len(got) < len(exact):
            got += (await client.read_frame()).payload
        assert got == exact
        for payload, opcode, fin in frames:
            client.send_frame(payload, opcode, fin=fin)
        frame = await client.expect_close()
        client.close()
        return frame.close_code

    assert run(scenario()) == 1009
