"""
Faults around the proxy: a VNC server that resets or is not there, a token
API that stops answering and comes back. Each costs only the console it
touches, with a clear close and log line; everything else keeps working.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.hostile.conftest import NO_GUARD, Backend, echo_check, open_console, run
from tests.hostile.streams import MiB
from tests.hostile.wsclient import WSClient
from tests.support.processes import free_port
from tests.support.twistd import Twistd, start_twistd

#: The proxy's --token-check-timeout in the slow-API case.
CHECK_TIMEOUT = 2.0


def test_vnc_server_reset_mid_session(txvnc: Twistd, backend: Backend):
    """A VNC server that resets its connection mid-stream ends that console with close 1011 (unavailable, which the page retries) and an info line saying it was reset; a console open beside it keeps working."""
    tag = "fault-reset"
    since = txvnc.log.mark()

    async def scenario() -> tuple[int | None, int, str]:
        beside, _ = await open_console(txvnc, backend, "ECHO fault-reset-beside")
        client, _ = await open_console(txvnc, backend, f"RESET {tag} {4 * MiB}")
        port = client.local_port
        frame = await client.expect_close()
        client.close()
        # The console beside it still echoes.
        beside.send_frame(b"still here")
        got = await beside.read_frame()
        beside.close()
        return frame.close_code, port, got.payload.decode()

    code, port, echoed = run(scenario())
    assert code == 1011
    assert echoed == "still here"
    assert txvnc.close_reason(port, since) == "VNC server reset the connection"
    assert txvnc.loud_lines(since) == []


def test_vnc_server_not_listening(txvnc: Twistd, backend: Backend):
    """A token for a VNC server that is not there opens the WebSocket, then closes it with 1011 and logs why at error level; the next good console works."""
    since = txvnc.log.mark()
    token = txvnc.mint("127.0.0.1", free_port())

    async def scenario() -> tuple[int | None, str, int]:
        client, response = await WSClient.connect(
            "127.0.0.1", txvnc.proxy_port, f"/websockify?token={token}"
        )
        assert response.status == 101
        port = client.local_port
        frame = await client.expect_close()
        client.close()
        await echo_check(txvnc, backend, "after-not-listening")
        return frame.close_code, frame.close_reason, port

    code, reason, port = run(scenario())
    assert code == 1011
    assert reason == "The console is unavailable: cannot reach its VNC server"
    assert txvnc.close_reason(port, since).startswith("cannot connect to VNC server")
    errors = txvnc.loud_lines(since)
    assert len(errors) == 1 and "#error]" in errors[0] and "cannot connect" in errors[0]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """
    The token API alone (--no-proxy), in a process the test can stop.
    """
    directory = tmp_path_factory.mktemp("split")
    server = start_twistd(directory, *NO_GUARD, proxy=False)
    yield server
    os.kill(server.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture(scope="module")
def proxy(api: Twistd) -> Iterator[Twistd]:
    """
    The proxy alone (--no-api), checking tokens with C{api}.
    """
    server = start_twistd(
        api.directory,
        *NO_GUARD,
        "--consoleauth-url", f"http://127.0.0.1:{api.api_port}",
        "--token-check-timeout", str(CHECK_TIMEOUT),
        api=False,
    )
    yield server
    server.stop()


def test_token_api_slow_then_back(api: Twistd, proxy: Twistd, backend: Backend):
    """While the token API is frozen (SIGSTOP), upgrades get 503 after the check timeout and open consoles keep relaying; once it answers again (SIGCONT), the next upgrade opens a console."""
    since = proxy.log.mark()
    tokens = [api.mint("127.0.0.1", backend.port) for _ in range(3)]

    async def frozen() -> tuple[int, float]:
        beside, _ = await open_console(proxy, backend, "ECHO api-frozen-beside", token=tokens[0])
        os.kill(api.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            client, response = await WSClient.connect(
                "127.0.0.1", proxy.proxy_port, f"/websockify?token={tokens[1]}"
            )
            took = time.monotonic() - started
            client.close()
            beside.send_frame(b"relaying without the API")
            assert (await beside.read_frame()).payload == b"relaying without the API"
            beside.close()
        finally:
            os.kill(api.pid, signal.SIGCONT)
        return response.status, took

    status, took = run(frozen())
    assert status == 503
    assert CHECK_TIMEOUT - 0.5 <= took <= CHECK_TIMEOUT + 5
    proxy.log.wait_for(r"#error\] .*cannot check token [0-9a-f]{12}: ", since)

    async def back() -> None:
        client, _ = await open_console(proxy, backend, "ECHO api-back", token=tokens[2])
        client.send_frame(b"back")
        assert (await client.read_frame()).payload == b"back"
        client.close()

    run(back())
    assert "Traceback" not in proxy.log.text(since)
