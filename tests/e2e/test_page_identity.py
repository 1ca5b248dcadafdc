"""
The console page asks the user to check the VNC server's identity when the
server offers RSA-AES security (RA2ne): noVNC fires C{serververification}
with the server's RSA key and waits for C{approveServer()}; before, such a
console sat at "Connecting…" for good.

No VNC server on this machine offers RSA-AES (Debian's TigerVNC is 1.12;
RSA-AES came in 1.13), so L{RA2Server} plays the server's side of RA2ne up
to the key exchange: the RFB greeting, the one security type, a real
2048-bit RSA key, then it waits for the client's own public key, which
noVNC sends only once the page approved the server's. The console is a
plain relay through a real C{twistd txvnc} to it, in Chromium.
"""

from __future__ import annotations

import hashlib
import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.twistd import Twistd

from .test_console import PAGE_TIMEOUT_MS
from .test_page_password import open_relay_console, wait_state

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RA2NE = 6
KEY_BITS = 2048


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


class RA2Server:
    """
    One connection at a time on a loopback port; each ends in C{events}
    as "approved" (the client sent its public key after the server's) or
    "closed" (the client went away without).
    """

    def __init__(self) -> None:
        numbers = (
            rsa.generate_private_key(65537, KEY_BITS).public_key().public_numbers()
        )
        size = KEY_BITS // 8
        #: What the server sends and noVNC hands the page as C{publickey}.
        self.key = (
            KEY_BITS.to_bytes(4, "big")
            + numbers.n.to_bytes(size, "big")
            + numbers.e.to_bytes(size, "big")
        )
        self.events: queue.Queue[str] = queue.Queue()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(
            target=self._serve, name="ra2-server", daemon=True
        )
        self._thread.start()

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.key).hexdigest()
        return "SHA-256 " + ":".join(
            digest[i : i + 2] for i in range(0, len(digest), 2)
        )

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                self.events.put(self._greet(connection))

    def _greet(self, connection: socket.socket) -> str:
        try:
            connection.sendall(b"RFB 003.008\n")
            read_exactly(connection, 12)
            connection.sendall(bytes([1, RA2NE]))
            if read_exactly(connection, 1)[0] != RA2NE:
                return "wrong type"
            connection.sendall(self.key)
            read_exactly(connection, 4 + 2 * (KEY_BITS // 8))  # the client's key
            return "approved"
        except (EOFError, OSError):
            return "closed"

    def next_event(self) -> str:
        return self.events.get(timeout=PAGE_TIMEOUT_MS / 1000)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def ra2_server() -> Iterator[RA2Server]:
    server = RA2Server()
    yield server
    server.close()


def wait_dialog(page: Any) -> None:
    page.wait_for_function(
        "() => document.getElementById('identity').open",
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )


def test_identity_is_shown_and_approval_goes_on(
    page: Any, txvnc: Twistd, ra2_server: RA2Server
) -> None:
    """An RA2ne server's key is shown as its SHA-256 fingerprint in a named dialog; Connect lets noVNC go on with the key exchange."""
    open_relay_console(page, txvnc, ra2_server.port)
    text = wait_state(page, "identity")
    assert text == "The machine's VNC server asks you to check its identity."
    wait_dialog(page)
    assert page.get_by_role(
        "dialog", name="Check the VNC server's identity"
    ).is_visible()
    assert page.locator("#identity-fingerprint").inner_text() == ra2_server.fingerprint
    # Cancel has the focus: Enter alone does not approve a key.
    assert page.evaluate("() => document.activeElement.id") == "identity-cancel"
    page.get_by_role("button", name="Connect").click()
    assert ra2_server.next_event() == "approved"
    assert not page.evaluate("() => document.getElementById('identity').open")


def test_cancel_disconnects_without_approving(
    page: Any, txvnc: Twistd, ra2_server: RA2Server
) -> None:
    """Cancel (or Escape) ends the console with a message saying so; noVNC never sends its key."""
    open_relay_console(page, txvnc, ra2_server.port)
    wait_dialog(page)
    page.keyboard.press("Escape")
    assert ra2_server.next_event() == "closed"
    text = wait_state(page, "disconnected")
    assert (
        text
        == "Disconnected: The VNC server's identity was not approved. Reload the page to try again."
    )
    assert not page.evaluate("() => document.getElementById('identity').open")
