"""
Secrets stay out of logs: tokens (valid, unknown, in every place a browser
or a caller puts them) and API keys (right or wrong). The session-wide
check in conftest covers every log the suite collected; this module makes
sure the awkward places were exercised and checks its own log at once.
"""

from __future__ import annotations

import asyncio
import http.client
import secrets
import struct
from urllib.parse import quote

from tests.hostile.conftest import Backend, open_console, run
from tests.hostile.wsclient import WSClient
from tests.support.logscan import SECRETS, Scanner
from tests.support.twistd import Twistd


def fresh(prefix: str = "") -> str:
    value = prefix + secrets.token_urlsafe(32)
    SECRETS.add(value)
    return value


def api_call(server: Twistd, method: str, path: str, key: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=30)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_no_secret_reaches_the_log(txvnc: Twistd, backend: Backend):
    """Tokens in the query, noVNC's path, a cookie, a Referer, a static URL and API paths, and wrong API keys, are all absent from the log."""
    since = txvnc.log.mark()
    valid = [txvnc.mint("127.0.0.1", backend.port) for _ in range(3)]
    unknown = [fresh() for _ in range(6)]
    wrong_key = fresh("key-")

    async def browser() -> None:
        # Valid tokens in each form open consoles.
        for path, cookie in [
            (f"/websockify?token={valid[0]}", None),
            (f"/websockify?path={quote('websockify?token=' + valid[1], safe='')}", None),
            ("/websockify", f"token={valid[2]}"),
        ]:
            headers = {"Cookie": cookie} if cookie else {}
            headers["Referer"] = f"http://127.0.0.1/vnc_auto.html?token={valid[0]}"
            client, response = await WSClient.connect(
                "127.0.0.1", txvnc.proxy_port, path, headers
            )
            assert response.status == 101
            client.close()
        # Unknown tokens in each form are refused.
        for path, headers in [
            (f"/websockify?token={unknown[0]}", {}),
            (f"/?path=%3Ftoken%3D{unknown[1]}", {}),
            ("/websockify", {"Cookie": f"token={unknown[2]}"}),
            (f"/websockify?token={unknown[3]}", {"Origin": "http://evil.example"}),
        ]:
            client, response = await WSClient.connect(
                "127.0.0.1", txvnc.proxy_port, path, headers
            )
            assert response.status == 403
            client.close()
        # A page load with a token, and a 404 with one.
        for path in (f"/vnc_auto.html?token={unknown[4]}", f"/nothing?token={unknown[4]}"):
            reader, writer = await asyncio.open_connection("127.0.0.1", txvnc.proxy_port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Referer: http://x/?token={unknown[5]}\r\n\r\n".encode()
            )
            await reader.read()
            writer.close()
        client, _ = await open_console(txvnc, backend, "ECHO secrets", token=valid[0])
        client.close()

    run(browser())
    assert api_call(txvnc, "GET", f"/v1/tokens/{valid[0]}", txvnc.api_key) == 200
    assert api_call(txvnc, "GET", f"/v1/tokens/{unknown[0]}", txvnc.api_key) == 404
    assert api_call(txvnc, "GET", f"/v1/tokens/{valid[1]}", wrong_key) == 401
    assert api_call(txvnc, "DELETE", f"/v1/tokens/{valid[2]}", txvnc.api_key) == 204

    # The access log line follows the answer: wait for the last call's.
    txvnc.log.wait_for(r'"DELETE /v1/tokens/~\w+ HTTP/1\.1" 204', since)
    log = txvnc.log.text(since)
    # The log did record these requests, by hash.
    assert log.count("GET /v1/tokens/~") >= 3
    scanner = Scanner([*valid, *unknown, wrong_key, txvnc.api_key])
    leaked = [
        f"line {n}: {kind}"
        for n, line in enumerate(log.splitlines(), 1)
        if (kind := scanner.exposes(line)) is not None
    ]
    assert leaked == []


async def fake_vnc_server(answered: asyncio.Future[bytes]) -> asyncio.Server:
    """
    Just enough of an RFB 3.8 server asking for VNC Authentication: it
    resolves C{answered} with the 16-byte DES response the proxy sends.
    """

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"RFB 003.008\n")
            await reader.readexactly(12)
            writer.write(bytes([1, 2]))  # one security type: VNC Authentication
            await reader.readexactly(1)
            writer.write(secrets.token_bytes(16))
            response = await reader.readexactly(16)
            writer.write(struct.pack("!I", 0))  # SecurityResult: OK
            await reader.readexactly(1)  # ClientInit
            pixel_format = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])
            writer.write(struct.pack("!HH", 640, 480) + pixel_format + struct.pack("!I", 4) + b"fake")
            if not answered.done():
                answered.set_result(response)
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_vnc_password_stays_out_of_the_log(txvnc: Twistd):
    """A token's VNC password, used by the proxy to answer a VNC Authentication challenge, appears in no log line."""
    since = txvnc.log.mark()
    password = "pw" + secrets.token_hex(3)  # VNC passwords are at most 8 bytes
    SECRETS.add(password)

    async def scenario() -> bytes:
        answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        server = await fake_vnc_server(answered)
        port = server.sockets[0].getsockname()[1]
        token = await asyncio.to_thread(
            txvnc.mint, "127.0.0.1", port, security="vnc", vnc_password=password
        )
        client, response = await WSClient.connect(
            "127.0.0.1", txvnc.proxy_port, f"/websockify?token={token}"
        )
        assert response.status == 101
        try:
            return await asyncio.wait_for(answered, 30)
        finally:
            client.close()
            server.close()

    assert len(run(scenario())) == 16
    txvnc.log.wait_for(r"console closed", since)
    assert password not in txvnc.log.text()
