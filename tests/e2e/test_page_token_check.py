"""
The console page after a bare 1006, in headless Chromium against a real
twistd: it asks the proxy (POST /token-check) whether its token still opens
a console, stops at once with the proxy's sentence when the token was
revoked or expired while the network was down, and keeps backing off, then
reconnects, while the proxy or the token API is only unreachable.

The network path is cut with a TCP relay in this process: while cut, it
resets every connection it carries and every new one.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.twistd import Twistd
from txvnc.consoleauth.keys import read_key_file

from .test_console import PAGE_TIMEOUT_MS, new_instance
from .test_console_page import TinyRFBServer, rfb_server, start, stop, wait_state

pytestmark = pytest.mark.e2e

__all__ = ["rfb_server"]  # the fixture, imported for the tests below

INVALID = "Disconnected: The token is invalid or has expired. Ask for a new console link."
UNREACHABLE = "The console service cannot be reached."
CANNOT_CHECK = "The console service cannot check the token right now."


class CuttableRelay:
    """
    A loopback TCP relay to C{target_port} whose path can be cut (every
    connection reset, new ones reset on arrival) and restored.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._cut = False
        #: While cut, what each new connection is sent before it is closed
        #: (None: it is reset at once).
        self._answer: bytes | None = None
        self._hold = False
        self._frozen = False
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    threading.Thread(target=self._refuse, args=(conn,), daemon=True).start()
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port))
                except OSError:
                    _reset(conn)
                    continue
                self._open += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._frozen:
                    dst.sendall(data)
        except OSError:
            pass
        # A frozen path carries no close either: only this side ends.
        for s in (src,) if self._frozen else (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _refuse(self, conn: socket.socket) -> None:
        if self._hold:
            # A path that drops packets: the connection stays, unanswered.
            with self._lock:
                self._open.append(conn)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            return
        if self._answer is not None:
            try:
                conn.settimeout(10)
                conn.recv(65536)  # the request line and headers, unread
                conn.sendall(self._answer)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            conn.close()
        else:
            _reset(conn)

    def cut(self, answer: bytes | None = None, hold: bool = False) -> None:
        """
        Reset every connection; new ones get C{answer} and are closed, or
        with C{hold} are left unanswered, or else are reset.
        """
        with self._lock:
            self._cut = True
            self._answer = answer
            self._hold = hold
            if self._frozen:
                return
            for s in self._open:
                _reset(s)
            self._open.clear()

    def freeze(self) -> None:
        """
        Drop packets: what open connections carry is read and thrown away
        (nothing is closed), and new connections are held unanswered.
        """
        with self._lock:
            self._frozen = True
        self.cut(hold=True)

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            self._frozen = False

    def close(self) -> None:
        self.cut()
        self.sock.close()


def _reset(s: socket.socket) -> None:
    """Close C{s} with a TCP reset, waking any thread blocked on it."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


@pytest.fixture
def relays() -> Iterator[list[CuttableRelay]]:
    made: list[CuttableRelay] = []
    yield made
    for relay in made:
        relay.close()


def relay_to(relays: list[CuttableRelay], port: int) -> CuttableRelay:
    relay = CuttableRelay(port)
    relays.append(relay)
    return relay


def wait_text(page: Any, fragment: str) -> str:
    """Wait until the status bar shows C{fragment}; its whole text."""
    page.wait_for_function(
        "(f) => document.getElementById('status').textContent.includes(f)",
        arg=fragment,
        timeout=PAGE_TIMEOUT_MS,
        polling=50,
    )
    return str(page.locator("#status").inner_text())


def page_state(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate(
            "() => ({attempts: window.txvnc.attempts, checks: window.txvnc.checks,"
            " retry: window.txvnc.retryTimer, code: document.body.dataset.closeCode})"
        )
    )


def token_gone(server: Twistd, token: str) -> bool:
    """Whether the token API no longer knows C{token} (expired or revoked)."""
    key = read_key_file(str(server.key_file))
    request = urllib.request.Request(
        f"{server.api_url}/v1/tokens/{token}", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            return False
    except urllib.error.HTTPError as e:
        return e.code == 404


@pytest.mark.parametrize("ending", ["revoked", "expired"])
def test_token_ended_while_the_network_was_cut_stops_at_once(
    page: Any,
    tmp_path: Path,
    rfb_server: TinyRFBServer,
    relays: list[CuttableRelay],
    ending: str,
) -> None:
    """A console whose network drops backs off while the proxy is unreachable; once the path is back, the first attempt learns the token was revoked or expired and the page stops with the proxy's sentence."""
    server = start(tmp_path)
    try:
        ttl = ["--ttl", "12"] if ending == "expired" else []
        result = server.cli(
            "console", "create", "--host", "127.0.0.1", "--port", str(rfb_server.port),
            "--instance-uuid", new_instance(), *ttl,
        )
        assert result.returncode == 0, result.stderr
        found = re.search(r"vnc_auto\.html\?token=([A-Za-z0-9_-]+)", result.stdout)
        assert found, result.stdout
        token = found.group(1)
        server.minted.append(token)
        relay = relay_to(relays, server.proxy_port)
        page.goto(f"http://127.0.0.1:{relay.port}/vnc_auto.html?token={token}")
        wait_state(page, "connected")

        relay.cut()
        text = wait_text(page, UNREACHABLE)
        assert "Reconnecting in" in text, text
        assert page_state(page)["checks"][0] == 0

        if ending == "revoked":
            revoked = server.cli("console", "revoke", token)
            assert revoked.returncode == 0, revoked.stderr
        else:
            # The event: the API answering 404 once the TTL has passed.
            _wait_until(lambda: token_gone(server, token), timeout=30)
        assert token_gone(server, token)

        before = page_state(page)
        relay.restore()
        text = wait_state(page, "disconnected")
        assert text == INVALID
        after = page_state(page)
        # The first attempt after the restore learns it (one attempt under
        # way at the restore may still have been refused by the cut relay):
        # no back-off over the dead token.
        new = after["checks"][len(before["checks"]):]
        assert new[-1] == 403 and new[:-1] in ([], [0]), (before, after)
        assert after["attempts"] - before["attempts"] <= len(new), (before, after)
        assert after["retry"] is None and after["code"] == "1006"
    finally:
        stop(server)
    log = server.log.text()
    assert "token check: the token" in log and "is invalid or has expired" in log
    assert token not in log


def _wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.25)


def test_proxy_killed_then_back_reconnects(page: Any, tmp_path: Path, rfb_server: TinyRFBServer) -> None:
    """With twistd killed (no close frame, a bare 1006) the page backs off saying the service cannot be reached, and reconnects once twistd is back, with the same token."""
    server = start(tmp_path)
    console = server.create_console("127.0.0.1", rfb_server.port, new_instance())
    try:
        page.goto(console.url)
        wait_state(page, "connected")

        assert server.kill() == -signal.SIGKILL
        text = wait_text(page, UNREACHABLE)
        assert re.search(r"Reconnecting in \d+ s \(attempt \d of 8\)", text), text
        assert page.evaluate("() => window.txvnc.closes[0].code") == 1006

        # The same command again: same ports, key file and SQLite store.
        server = server.rerun()
        wait_state(page, "connected")
        rfb_server.wait(lambda: rfb_server.connections >= 2)
        state = page_state(page)
        assert state["attempts"] == 0 and state["checks"][0] == 0, state
        assert 403 not in state["checks"], state
    finally:
        stop(server)
    assert console.token not in server.log.text()


def test_token_api_down_backs_off_then_opens(
    page: Any, tmp_path: Path, rfb_server: TinyRFBServer, relays: list[CuttableRelay]
) -> None:
    """Opened while the token API is down, the page says the service cannot check the token right now and keeps trying; once the API is back the console opens."""
    # The proxy reaches the token API only through the relay (which learns
    # the API's port once twistd has bound it).
    api_relay = CuttableRelay(0)
    relays.append(api_relay)
    api_relay.cut()
    server = start(tmp_path, "--consoleauth-url", f"http://127.0.0.1:{api_relay.port}")
    api_relay.target_port = server.api_port
    try:
        console = server.create_console("127.0.0.1", rfb_server.port, new_instance())
        api_relay.cut()
        page.goto(console.url)
        text = wait_text(page, CANNOT_CHECK)
        assert text.startswith(f"Disconnected: {CANNOT_CHECK} Reconnecting in"), text
        assert page_state(page)["checks"][0] == 503

        api_relay.restore()
        wait_state(page, "connected")
        state = page_state(page)
        assert state["attempts"] == 0 and 403 not in state["checks"], state
        server.log.wait_for(r"token check: cannot check token [0-9a-f]{12}: ")
    finally:
        stop(server)
    assert console.token not in server.log.text()


def test_load_balancer_without_a_backend_is_unreachable_then_reconnects(
    page: Any, tmp_path: Path, rfb_server: TinyRFBServer, relays: list[CuttableRelay]
) -> None:
    """A load balancer answering 502 for a proxy that is gone reads as unreachable, not as a token problem; the page backs off and reconnects when the proxy is back."""
    server = start(tmp_path)
    console = server.create_console("127.0.0.1", rfb_server.port, new_instance())
    relay = relay_to(relays, server.proxy_port)
    try:
        page.goto(f"http://127.0.0.1:{relay.port}/vnc_auto.html?token={console.token}")
        wait_state(page, "connected")
        relay.cut(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n"
            b"Content-Length: 20\r\nConnection: close\r\n\r\n<h1>Bad Gateway</h1>"
        )
        text = wait_text(page, UNREACHABLE)
        assert re.search(r"Reconnecting in \d+ s", text), text
        assert page_state(page)["checks"][0] == 502

        relay.restore()
        wait_state(page, "connected")
        rfb_server.wait(lambda: rfb_server.connections >= 2)
        assert 403 not in page_state(page)["checks"]
    finally:
        stop(server)


def test_silent_network_times_out_backs_off_then_reconnects(
    page: Any, tmp_path: Path, rfb_server: TinyRFBServer, relays: list[CuttableRelay]
) -> None:
    """On a path that drops packets (connections accepted, never answered) the token check gives up after 10 s and a reconnect after 35 s, both counted as unreachable; once the path is back the console reconnects. The page's clock is Playwright's, fast-forwarded."""
    page.clock.install()
    server = start(tmp_path)
    console = server.create_console("127.0.0.1", rfb_server.port, new_instance())
    relay = relay_to(relays, server.proxy_port)
    try:
        page.goto(f"http://127.0.0.1:{relay.port}/vnc_auto.html?token={console.token}")
        wait_state(page, "connected")
        relay.cut(hold=True)
        wait_text(page, "checking the console's link")
        page.clock.fast_forward(10_500)
        text = wait_text(page, UNREACHABLE)
        assert "attempt 1 of 8" in text, text

        page.clock.fast_forward(1_500)
        wait_text(page, "Reconnecting…")
        page.clock.fast_forward(35_500)  # the WebSocket that never opened
        wait_text(page, "Checking the console's link")
        assert page.evaluate("() => window.txvnc.closes.map((c) => c.code)") == [1006, 1006]

        relay.restore()
        page.clock.fast_forward(10_500)  # the check that was held
        text = wait_text(page, UNREACHABLE)
        assert "attempt 2 of 8" in text, text
        page.clock.fast_forward(2_500)
        wait_state(page, "connected")
        rfb_server.wait(lambda: rfb_server.connections >= 2)
        assert page_state(page)["checks"] == [0, 0]
    finally:
        stop(server)


def test_silent_drop_of_an_open_console_is_noticed_then_reconnected(
    page: Any, tmp_path: Path, rfb_server: TinyRFBServer, relays: list[CuttableRelay]
) -> None:
    """An open console whose path starts dropping packets (nothing closes) is taken for lost after three silent keepalive intervals, checked, backed off from, and reconnected once the path is back. The page's clock is Playwright's, fast-forwarded."""
    page.clock.install()
    server = start(tmp_path)
    console = server.create_console("127.0.0.1", rfb_server.port, new_instance())
    relay = relay_to(relays, server.proxy_port)
    try:
        page.goto(f"http://127.0.0.1:{relay.port}/vnc_auto.html?token={console.token}")
        wait_state(page, "connected")
        page.wait_for_function("() => window.txvnc.keepalive === 20", timeout=PAGE_TIMEOUT_MS)

        relay.freeze()
        page.clock.run_for(59_000)
        assert wait_state(page, "connected")  # not yet three silent intervals
        page.clock.run_for(2_000)
        page.clock.run_for(3_500)  # noVNC gives up on the dead socket's close
        wait_text(page, "checking the console's link")
        relay.restore()
        page.clock.fast_forward(10_500)  # the check the frozen path held
        text = wait_text(page, UNREACHABLE)
        assert "attempt 1 of 8" in text, text
        page.clock.fast_forward(1_500)
        wait_state(page, "connected")
        rfb_server.wait(lambda: rfb_server.connections >= 2)
        assert page_state(page)["checks"] == [0]
    finally:
        relay.close()  # the frozen console's socket, which would hold the drain
        stop(server)
