"""
txvnc's console page in headless Chromium: the reason for every close
code, the idle warning, no reconnect after a limit, reconnect with back-off
after a restart, clipboard paste to the VNC server, and full screen.

A small RFB 3.8 server (security None, a 64x48 screen) stands in for the
VM, so the test can see what the page sends it.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.twistd import Twistd, start_twistd
from txvnc.proxy import closecodes

from .conftest import sqlite_store
from .test_console import PAGE_TIMEOUT_MS, new_instance

pytestmark = pytest.mark.e2e


class TinyRFBServer:
    """
    Accepts RFB clients on loopback, completes the handshake, and records
    every ClientCutText it receives.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cut_texts: list[bytes] = []
        self.connections = 0
        self.changed = threading.Condition()
        self._clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        def read(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data

        try:
            conn.sendall(b"RFB 003.008\n")
            read(12)
            conn.sendall(b"\x01\x01")  # one security type: None
            read(1)
            conn.sendall(struct.pack("!I", 0))
            read(1)  # ClientInit
            pixel_format = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
            name = b"tiny"
            conn.sendall(struct.pack("!HH", 64, 48) + pixel_format + struct.pack("!I", len(name)) + name)
            with self.changed:
                self.connections += 1
                self.changed.notify_all()
            while True:
                kind = read(1)[0]
                if kind == 0:
                    read(19)
                elif kind == 2:
                    (count,) = struct.unpack("!xH", read(3))
                    read(4 * count)
                elif kind == 3:
                    read(9)
                elif kind == 4:
                    read(7)
                elif kind == 5:
                    read(5)
                elif kind == 6:
                    (length,) = struct.unpack("!xxxI", read(7))
                    text = read(length)
                    with self.changed:
                        self.cut_texts.append(text)
                        self.changed.notify_all()
                else:
                    return  # a message this server does not know: hang up
        except (EOFError, OSError):
            return
        finally:
            conn.close()

    def wait(self, predicate: Any, timeout: float = 30.0) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), "the RFB server waited in vain"

    def reset_all(self) -> None:
        """
        Reset (RST) every connection so far: with a zero linger, the close
        that follows the serving thread's wake-up (SHUT_RD) sends a reset.
        """
        for conn in self._clients:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        for conn in self._clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def rfb_server() -> Iterator[TinyRFBServer]:
    server = TinyRFBServer()
    yield server
    server.close()


def start(tmp_path: Path, *extra: str) -> Twistd:
    return start_twistd(tmp_path, *extra, store=sqlite_store(tmp_path))


def stop(server: Twistd) -> None:
    code = server.stop()
    assert code == 0, server.log.text()


def wait_state(page: Any, state: str) -> str:
    page.wait_for_function(
        f"() => document.getElementById('status').dataset.state === '{state}'",
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )
    return page.locator("#status").inner_text()


def test_every_close_code_has_a_sentence(page: Any, tmp_path: Path) -> None:
    """The page has its own sentence for every code the proxy sends, and prefers the proxy's reason."""
    server = start(tmp_path)
    try:
        page.goto(f"{server.base_url}/vnc_auto.html")
        page.wait_for_function("() => window.txvncCloseText !== undefined", timeout=PAGE_TIMEOUT_MS)
        for code in closecodes.REASONS:
            text = page.evaluate(f"() => window.txvncCloseText({code}, '')")
            assert text and f"(code {code})" not in text, code
        assert page.evaluate("() => window.txvncCloseText(4002, 'Closed for a reason')") == "Closed for a reason."
    finally:
        stop(server)


def test_idle_warning_then_close_without_reconnect(page: Any, tmp_path: Path, rfb_server: TinyRFBServer) -> None:
    """An idle console shows the proxy's warning, then 4002 and its reason, and does not reconnect."""
    server = start(tmp_path, "--idle-timeout", "4")
    try:
        console = server.create_console("127.0.0.1", rfb_server.port, new_instance())
        page.goto(console.url)
        wait_state(page, "connected")
        page.wait_for_function(
            "() => !document.getElementById('notice').hidden", timeout=PAGE_TIMEOUT_MS
        )
        assert "closes in 4 s" in page.locator("#notice").inner_text()
        text = wait_state(page, "disconnected")
        assert text == "Disconnected: The console was closed after a period without input."
        assert page.evaluate("() => document.body.dataset.closeCode") == "4002"
        assert page.evaluate("() => [window.txvnc.attempts, window.txvnc.retryTimer]") == [0, None]
    finally:
        stop(server)


def test_vnc_connection_reset_is_retried(page: Any, tmp_path: Path, rfb_server: TinyRFBServer) -> None:
    """A VNC connection reset under an open console closes it with 1011 and the proxy's reason, and the page opens the console again by itself."""
    server = start(tmp_path)
    try:
        console = server.create_console("127.0.0.1", rfb_server.port, new_instance())
        page.goto(console.url)
        wait_state(page, "connected")
        rfb_server.reset_all()
        page.wait_for_function("() => window.txvnc.closes.length > 0", timeout=PAGE_TIMEOUT_MS)
        assert page.evaluate("() => window.txvnc.closes[0]") == {
            "code": 1011,
            "reason": "The console is unavailable: the connection to its VNC server was lost",
        }
        rfb_server.wait(lambda: rfb_server.connections >= 2)
        wait_state(page, "connected")
        assert server.log.wait_for(r"VNC server reset the connection")
    finally:
        stop(server)


def test_reconnects_after_a_restart_pastes_and_goes_full_screen(
    page: Any, tmp_path: Path, rfb_server: TinyRFBServer
) -> None:
    """Paste reaches the VNC server, full screen works, and a restart (1001) is followed by a reconnect after a jittered wait."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    server = start(tmp_path)
    console = server.create_console("127.0.0.1", rfb_server.port, new_instance())
    try:
        page.goto(console.url)
        wait_state(page, "connected")

        page.evaluate("() => navigator.clipboard.writeText('hello from txvnc')")
        page.click("#paste")
        rfb_server.wait(lambda: b"hello from txvnc" in rfb_server.cut_texts)

        page.click("#fullscreen")
        page.wait_for_function(
            "() => document.fullscreenElement !== null"
            " && document.getElementById('fullscreen').textContent === 'Exit full screen'",
            timeout=PAGE_TIMEOUT_MS,
        )

        stop(server)
        # Told 1001, then retrying with back-off while nothing listens.
        text = wait_state(page, "reconnecting")
        assert "Reconnecting in " in text
        # Waits are jittered within half to all of each doubling step, so
        # pages told 1001 together do not all come back together.
        assert 500 <= page.evaluate("() => window.txvnc.delays[0]") <= 1000
        for attempt, step in [(0, 1000), (3, 8000), (10, 30000)]:
            draws = page.evaluate(
                f"() => Array.from({{length: 200}}, () => window.txvnc.backoffDelay({attempt}))"
            )
            assert step / 2 <= min(draws) and max(draws) <= step, (attempt, draws)
            assert len(set(draws)) > 50, (attempt, draws)
        assert page.evaluate("() => window.txvnc.closes[0]") == {
            "code": 1001,
            "reason": "Service restarting",
        }

        # The same command again: same ports, key file and SQLite store.
        server = server.rerun()
        wait_state(page, "connected")
        rfb_server.wait(lambda: rfb_server.connections >= 2)
    finally:
        stop(server)
