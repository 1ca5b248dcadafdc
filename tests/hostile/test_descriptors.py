"""
File descriptors, against a real C{twistd txvnc} started with a 256
open-files limit: 300 consoles at once take what fits (C{--max-connections}
derived from the limit), the rest are refused cleanly (1013, or 503 when
even a connection does not fit), and the token API and health checks keep
answering throughout; nothing ever meets C{EMFILE}.
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile.conftest import NO_GUARD, Backend, echo_check, run
from tests.hostile.wsclient import OP_CLOSE, WSClient
from tests.support.twistd import Twistd, start_twistd
from txvnc.proxy.capacity import default_max_connections

OPEN_FILES = 256
ATTEMPTS = 300


@pytest.fixture(scope="module")
def cramped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """A twistd whose open-files limit is 256, with every other default."""
    server = start_twistd(
        tmp_path_factory.mktemp("cramped"), *NO_GUARD, open_files=OPEN_FILES
    )
    yield server
    server.stop()


def get(port: int, path: str) -> int:
    """The status of C{GET path} on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_300_consoles_under_256_open_files(cramped: Twistd, backend: Backend):
    """Of 300 consoles at once under a 256 open-files limit, at most the derived --max-connections open and work; the others are answered 1013 or 503 (or, past 32 answers in flight, closed at once); the token API, its /healthz and minting keep answering; nothing logs EMFILE; afterwards consoles open again."""
    limit = default_max_connections(OPEN_FILES)
    assert cramped.log.wait_for(
        rf"at most {limit} consoles \(open-files limit {OPEN_FILES}\)"
    )
    since = cramped.log.mark()
    token = cramped.mint("127.0.0.1", backend.port)

    async def attempt(i: int) -> tuple[Any, WSClient | None]:
        try:
            client, response = await WSClient.connect(
                "127.0.0.1", cramped.proxy_port, f"/websockify?token={token}"
            )
        except EOFError:
            # Past 32 answers in flight the proxy closes at once rather
            # than hold more descriptors (the request may not have been
            # read yet, so the close can arrive as a reset).
            return "closed", None
        if response.status != 101:
            client.close()
            return response.status, None
        client.send_frame(b"ECHO fd-%d\n" % i)
        client.send_frame(b"hello %d" % i)
        frame = await client.read_frame()
        if frame.opcode == OP_CLOSE:
            client.close()
            return frame.close_code, None
        assert frame.payload == b"hello %d" % i
        return "open", client

    async def scenario() -> tuple[list[Any], list[int], str, list[int]]:
        results = await asyncio.gather(*(attempt(i) for i in range(ATTEMPTS)))
        print("outcomes:", {o: [r for r, _ in results].count(o) for o, _ in results})
        held = [client for _, client in results if client is not None]
        # Every console that opened is still held: the API still answers.
        answers = [
            await asyncio.to_thread(get, cramped.api_port, "/healthz"),
            await asyncio.to_thread(get, cramped.api_port, "/readyz"),
        ]
        minted = await asyncio.to_thread(
            cramped.mint, "127.0.0.1", backend.port
        )
        ports = [client.local_port for client in held]
        for client in held:
            client.close()
        return [outcome for outcome, _ in results], answers, minted, ports

    outcomes, answers, minted, ports = run(scenario(), timeout=300)
    opened = outcomes.count("open")
    assert 0 < opened <= limit, outcomes
    assert set(outcomes) <= {"open", 1013, 503, "closed"}, outcomes
    assert 1013 in outcomes and 503 in outcomes, outcomes
    assert answers == [200, 200]
    assert minted
    # Once the held consoles are closed, consoles open again.
    for port in ports:
        cramped.close_reason(port, since)
    assert get(cramped.proxy_port, "/healthz") == 200
    run(echo_check(cramped, backend, "fd-after"))
    text = cramped.log.text()
    assert "EMFILE" not in text and "Too many open files" not in text
