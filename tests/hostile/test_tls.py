"""
The proxy on a TLS listener (an ssl: endpoint) meets what the edge sends
before any HTTP: plain HTTP, silence, and a TLS handshake sent one byte a
second. Each is dropped within the handshake timeout, quietly, while TLS
consoles keep working.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.hostile.conftest import NO_GUARD, Backend, echo_check, run
from tests.rfb.pki import make_pki
from tests.support.twistd import Twistd, start_twistd

HANDSHAKE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def tls_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    twistd txvnc whose proxy listens with TLS (certificate from a test CA).
    """
    directory = tmp_path_factory.mktemp("tls")
    pki = make_pki(directory)
    listen = (
        "ssl:{port}:interface=127.0.0.1:"
        f"privateKey={pki.server_key}:certKey={pki.server_cert}"
    )
    server = start_twistd(
        directory, *NO_GUARD, "--handshake-timeout", str(HANDSHAKE_TIMEOUT), listen=listen
    )
    server.tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    yield server
    server.stop()


async def until_closed(port: int, send: bytes, every: float | None = None) -> float:
    """
    Send C{send} (one byte each C{every} seconds, if given) and return how
    long the proxy took to close the connection.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        if every is None:
            writer.write(send)
        else:
            for byte in send:
                writer.write(bytes([byte]))
                try:
                    if not await asyncio.wait_for(reader.read(65536), every):
                        return time.monotonic() - started
                except TimeoutError:
                    continue
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - started


def test_tls_console_works(tls_proxy: Twistd, backend: Backend):
    """A console over TLS relays."""
    run(echo_check(tls_proxy, backend, "tls-good"))


@pytest.mark.parametrize(
    "name, send, every",
    [
        ("silence", b"", None),
        ("plain HTTP", b"GET /vnc_auto.html HTTP/1.1\r\nHost: x\r\n\r\n", None),
        # A TLS 1.2 ClientHello's first bytes, then more, slowly.
        ("a TLS hello one byte a second", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), 1.0),
    ],
    ids=["silence", "plain HTTP", "slow TLS hello"],
)
def test_tls_abuse_is_dropped(tls_proxy: Twistd, backend: Backend, name: str, send: bytes, every: float | None):
    """Silence, plain HTTP or a dribbled TLS hello on the TLS port is dropped within the handshake timeout, quietly, while a TLS console works."""
    since = tls_proxy.log.mark()

    async def scenario() -> float:
        dropped = asyncio.ensure_future(until_closed(tls_proxy.proxy_port, send, every))
        await echo_check(tls_proxy, backend, "tls-beside-" + name.replace(" ", "-"))
        return await dropped

    took = run(scenario(), timeout=HANDSHAKE_TIMEOUT + 60)
    assert took <= HANDSHAKE_TIMEOUT + 5
    assert tls_proxy.loud_lines(since) == []
