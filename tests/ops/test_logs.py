"""
--log-format json: the observer alone, and a real twistd's whole output
parsed line by line.
"""

from __future__ import annotations

import io
import json
import signal

import pytest_twisted
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from tests.ops.test_shutdown import browse
from tests.support.fakevnc import FakeVNCServer
from tests.support.twistd import start_twistd_async
from txvnc.ops.logs import JSONLineObserver


def test_one_object_per_line_with_fields():
    """Each event is one JSON line with time, level, namespace, message and its plain fields."""
    out = io.StringIO()
    publisher = LogPublisher(JSONLineObserver(out))
    log = Logger(namespace="txvnc.test", observer=publisher)
    log.info(
        "[{conn_id}] {client}: console closed\nafter {n} bytes",
        conn_id="req-1",
        client="10.0.0.1:5555",
        n=42,
        obj=object(),
    )
    log.warn("second")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["message"] == "[req-1] 10.0.0.1:5555: console closed\nafter 42 bytes"
    assert first["level"] == "info"
    assert first["namespace"] == "txvnc.test"
    assert first["conn_id"] == "req-1" and first["n"] == 42
    assert "obj" not in first
    assert first["time"].endswith("+00:00")
    assert json.loads(lines[1])["level"] == "warn"


def test_failures_carry_their_traceback():
    """A logged failure adds its traceback as a field, still on one line."""
    out = io.StringIO()
    log = Logger(namespace="t", observer=LogPublisher(JSONLineObserver(out)))
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("it broke", Failure(), level=LogLevel.error)
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert "ZeroDivisionError" in record["traceback"]


@pytest_twisted.ensureDeferred
async def test_real_twistd_json_log(tmp_path):
    """Every line a real twistd prints with --log-format json parses, and a console's lines share its conn_id."""
    vnc = FakeVNCServer()
    server = await start_twistd_async(tmp_path, "--log-format", "json")
    try:
        token = await server.mint_async("127.0.0.1", vnc.address.port, instance_uuid="inst-1")
        connected = vnc.next_connection()
        browser = await browse(server.proxy_port, token)
        await connected
        browser.sendClose(1000)
        await browser.closed
        await server.wait_for(r"console closed")
        server.signal(signal.SIGTERM)
        assert await server.ended() == 0
    finally:
        server.kill()
        await vnc.stop()

    lines = server.log.lines()
    records = [json.loads(line) for line in lines if line]
    assert len(records) > 10
    for record in records:
        assert {"time", "level", "namespace", "message"} <= record.keys()
    console = [r for r in records if "conn_id" in r]
    ids = {r["conn_id"] for r in console}
    assert len(ids) == 1 and next(iter(ids)).startswith("req-")
    messages = " | ".join(r["message"] for r in console)
    assert "token" in messages and "accepted" in messages
    assert "connecting to" in messages and "console closed" in messages
    closed = next(r for r in console if "console closed" in r["message"])
    assert closed["bytes_to_vnc"] == 0 and "duration" in closed
    assert token not in "\n".join(lines)
    assert any(r["message"] == "Server Shut Down." for r in records)
