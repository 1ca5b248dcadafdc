"""
The console page asks for the VNC password when the VNC server asks for
one: a plain relay console (no RFB security on the token, none on the
proxy) to an Xtigervnc with VncAuth. noVNC meets the server's challenge
itself, so the page must show noVNC's C{credentialsrequired} as a prompt;
before, such a console sat at "Connecting…" for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.twistd import Twistd
from tests.support.vncservers import PASSWORD, TigerVNC, password_file, tigervnc

from .test_console import PAGE_TIMEOUT_MS

pytestmark = [pytest.mark.e2e, pytest.mark.vnc_servers, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def vncauth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TigerVNC]:
    """
    One Xtigervnc for the module that asks for L{PASSWORD} (VncAuth only).
    """
    directory = tmp_path_factory.mktemp("tigervnc")
    secret = password_file(directory)
    with tigervnc(directory, "-SecurityTypes", "VncAuth", "-PasswordFile", str(secret)) as server:
        yield server


def open_relay_console(page: Any, txvnc: Twistd, port: int) -> str:
    """
    Mint a plain relay console for C{port} and open it; its URL.
    """
    token = txvnc.mint("127.0.0.1", port)
    url = f"{txvnc.base_url}/vnc_auto.html?token={token}"
    page.goto(url)
    return url


def wait_state(page: Any, state: str) -> str:
    page.wait_for_function(
        "(s) => document.getElementById('status').dataset.state === s",
        arg=state,
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )
    return str(page.locator("#status").inner_text())


def wait_prompt(page: Any) -> None:
    """
    Wait until the password dialog is open, with its field focused.
    """
    page.wait_for_function(
        "() => document.getElementById('credentials').open"
        " && document.activeElement === document.getElementById('credentials-password')",
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )


def nothing_kept(page: Any, secret: str) -> None:
    """
    The password is in no URL, no storage and no cookie of the page.
    """
    kept = page.evaluate(
        "() => [location.href, document.cookie,"
        " JSON.stringify(Object.assign({}, localStorage)),"
        " JSON.stringify(Object.assign({}, sessionStorage)),"
        " JSON.stringify(performance.getEntries().map((e) => e.name))]"
    )
    for value in kept:
        assert secret not in value, value


def test_password_prompt_connects(page: Any, txvnc: Twistd, vncauth_server: TigerVNC) -> None:
    """A relay console to a VncAuth server shows a labelled password prompt; the typed password connects, and it is kept nowhere."""
    since = txvnc.log.mark()
    url = open_relay_console(page, txvnc, vncauth_server.port)
    text = wait_state(page, "password")
    assert text == "The machine's VNC server asks for a password."
    wait_prompt(page)
    # A labelled field, in a modal dialog with a name.
    assert page.get_by_role("dialog", name="VNC password").is_visible()
    field = page.get_by_label("Password", exact=True)
    assert field.get_attribute("type") == "password"
    assert field.get_attribute("name") is None  # nothing a form could submit
    # Only the fields the server asked for.
    assert page.locator("#credentials-username").is_hidden()

    # A password pasted into the field stays there (the page's own paste
    # handler, which sends text to the machine, leaves fields alone).
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.evaluate("(p) => navigator.clipboard.writeText(p)", PASSWORD)
    page.keyboard.press("Control+V")
    assert field.input_value() == PASSWORD
    page.keyboard.press("Enter")
    text = wait_state(page, "connected")
    assert text == "Connected to txvnc-test"
    assert not page.evaluate("() => document.getElementById('credentials').open")
    # The field is emptied once the password went to noVNC.
    assert field.input_value() == ""
    assert page.url == url
    nothing_kept(page, PASSWORD)
    assert PASSWORD not in txvnc.log.text(since)


def test_wrong_password_says_so_and_lets_the_user_retry(
    page: Any, txvnc: Twistd, vncauth_server: TigerVNC
) -> None:
    """A wrong password is reported as such (not as a closed console) and the prompt comes back; the right one then connects."""
    open_relay_console(page, txvnc, vncauth_server.port)
    wait_prompt(page)
    page.fill("#credentials-password", "not the password")
    page.click("#credentials-submit")

    wait_prompt(page)
    error = page.locator("#credentials-error")
    assert error.is_visible()
    assert error.inner_text().startswith("The VNC server did not accept the password")
    # The field says it is wrong and points at the message.
    field = page.locator("#credentials-password")
    assert field.get_attribute("aria-invalid") == "true"
    assert field.get_attribute("aria-describedby") == "credentials-error"
    assert field.input_value() == ""
    text = page.locator("#status").inner_text()
    assert "password was not accepted" in text, text
    assert page.evaluate("() => window.txvnc.attempts") == 0

    field.fill(PASSWORD)
    page.click("#credentials-submit")
    assert wait_state(page, "connected") == "Connected to txvnc-test"
    assert not error.is_visible()
    nothing_kept(page, PASSWORD)


def test_cancelled_prompt_disconnects(page: Any, txvnc: Twistd, vncauth_server: TigerVNC) -> None:
    """Escape (or Cancel) on the prompt ends the attempt with a sentence saying why, instead of leaving it connecting."""
    open_relay_console(page, txvnc, vncauth_server.port)
    wait_prompt(page)
    page.keyboard.press("Escape")
    text = wait_state(page, "disconnected")
    assert text == "Disconnected: No password was given. Reload the page to try again."
    assert page.evaluate("() => [window.txvnc.attempts, window.txvnc.retryTimer]") == [0, None]


def test_no_prompt_without_a_password(page: Any, txvnc: Twistd, tmp_path: Path) -> None:
    """A server without a password connects straight away: the prompt never opens."""
    with tigervnc(tmp_path, "-SecurityTypes", "None") as server:
        open_relay_console(page, txvnc, server.port)
        wait_state(page, "connected")
        assert not page.evaluate("() => document.getElementById('credentials').open")
