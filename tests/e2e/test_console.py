"""
The whole path, with real processes: the C{txvnc} command mints a token from
a running C{twistd txvnc}, headless Chromium opens the access URL, and the
proxy relays the console of a real qemu VM.
"""

from __future__ import annotations

import secrets
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.support.cli import run_cli
from tests.support.processes import free_port
from tests.support.twistd import Twistd
from txvnc.core.tokens import token_ref

from .conftest import ARTIFACTS, VM

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

#: Milliseconds for page-side waits (Playwright's unit).
PAGE_TIMEOUT_MS = 60_000
#: Seconds for log waits.
LOG_TIMEOUT = 60.0

#: How much of the canvas must be lit (not black) before the screen counts
#: as drawn by the guest. qemu itself draws "Guest has not initialized the
#: display (yet)." mid-screen (~1,000 lit pixels, none in the top tenth)
#: before the guest runs; SeaBIOS's banner lights ~1,000 pixels in the top
#: tenth, and its screen ending in "No bootable device" ~4,500 in all.
MIN_LIT = {"top": 100, "total": 2000}

#: Counts the canvas pixels that are not black, in the top tenth and in all;
#: false (keep polling) below the minimums, so Playwright's wait_for_function
#: returns the counts once the guest has drawn.
LIT_PIXELS_JS = """
(minimum) => {
  const canvas = document.querySelector("#screen canvas");
  if (!canvas || !canvas.width || !canvas.height) return false;
  const { data } = canvas.getContext("2d")
    .getImageData(0, 0, canvas.width, canvas.height);
  const topEnd = 4 * canvas.width * Math.floor(canvas.height / 10);
  let top = 0, total = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] || data[i + 1] || data[i + 2]) {
      total++;
      if (i < topEnd) top++;
    }
  }
  return top >= minimum.top && total >= minimum.total ? { top, total } : false;
}
"""


def open_console(page: Any, url: str) -> tuple[str, str]:
    """
    Open a console page and wait until it leaves the connecting state; its
    state and status text.
    """
    page.goto(url)
    page.wait_for_function(
        "() => document.getElementById('status').dataset.state !== 'connecting'",
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )
    status = page.locator("#status")
    return status.get_attribute("data-state"), status.inner_text()


def assert_refused(page: Any, url: str) -> str:
    """
    Opening C{url} ends disconnected with a reason on screen; the reason.
    """
    state, text = open_console(page, url)
    assert state == "disconnected", f"the console opened: {text!r}"
    # The page sets the close code once it has the socket's close event.
    page.wait_for_function(
        "() => document.body.dataset.closeCode !== undefined",
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )
    text = page.locator("#status").inner_text()
    # A refused handshake reaches the browser as a bare 1006; the page asks
    # the proxy why (POST /token-check) and shows the proxy's sentence,
    # without retrying.
    assert text == (
        "Disconnected: The token is invalid or has expired. Ask for a new console link."
    ), text
    assert page.evaluate("() => [window.txvnc.checks, window.txvnc.attempts]") == [[403], 0]
    return text


def invalid_token_line(token: str) -> str:
    """
    The proxy's log line refusing C{token}, which names it by its reference.
    """
    return rf"handler exception: The token {token_ref(token)} is invalid or has expired"


def new_instance() -> str:
    """
    A fresh instance UUID, so tests never share tokens.
    """
    return str(uuid.uuid4())


def test_console_shows_the_vm_screen(page: Any, txvnc: Twistd, vm: VM) -> None:
    """
    A token minted with the CLI opens the VM's console in Chromium, the
    screen gets drawn, and the proxy logs the console without the token.
    """
    since = txvnc.log.mark()
    console = txvnc.create_console("127.0.0.1", vm.port, new_instance())
    assert console.url.startswith(f"{txvnc.base_url}/vnc_auto.html?token=")

    state, text = open_console(page, console.url)
    assert state == "connected", f"the console did not open: {text!r}"
    assert text.startswith("Connected to QEMU"), text

    try:
        lit = page.wait_for_function(
            LIT_PIXELS_JS, arg=MIN_LIT, timeout=PAGE_TIMEOUT_MS, polling=250
        ).json_value()
    except PlaywrightTimeoutError:
        pytest.fail(
            f"the canvas did not show SeaBIOS's screen within "
            f"{PAGE_TIMEOUT_MS / 1000:g}s (qemu under {vm.accel})"
        )
    assert lit["top"] >= MIN_LIT["top"] and lit["total"] >= MIN_LIT["total"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"))

    opened = txvnc.log.wait_for(
        rf"\[(req-[0-9a-f-]+)\] 127\.0\.0\.1:\d+: connecting to: "
        rf"127\.0\.0\.1:{vm.port} ",
        since=since,
        timeout=LOG_TIMEOUT,
    )
    conn_id = opened.group(1)

    page.close()
    closed = txvnc.log.wait_for(
        rf"\[{conn_id}\] .*: console closed, .*; (\d+) bytes to VNC, "
        rf"(\d+) bytes from VNC in [\d.]+s$",
        since=since,
        timeout=LOG_TIMEOUT,
    )
    to_vnc, from_vnc = int(closed.group(1)), int(closed.group(2))
    # noVNC's handshake and update requests one way; the other way, more
    # than the ~60 bytes of qemu's handshake: the (compressed) screen.
    assert to_vnc > 0
    assert from_vnc > 200

    # The page and the token check were logged, each with the token's
    # reference in place of the token, and the token is nowhere.
    log = txvnc.log.text(since)
    ref = token_ref(console.token)
    assert f'"GET /vnc_auto.html?token=~{ref} HTTP/1.1" 200 ' in log
    assert f'"POST /v1/tokens/~{ref}/use HTTP/1.1" 200 ' in log
    assert console.token not in txvnc.log.text()


def test_wrong_token_is_refused(page: Any, txvnc: Twistd) -> None:
    """
    A token the API never minted leaves the page disconnected with a
    reason, and the log names the refusal without the token.
    """
    since = txvnc.log.mark()
    bogus = secrets.token_urlsafe(32)
    assert_refused(page, f"{txvnc.base_url}/vnc_auto.html?token={bogus}")
    txvnc.log.wait_for(invalid_token_line(bogus), since=since, timeout=LOG_TIMEOUT)
    assert bogus not in txvnc.log.text()


def test_revoked_token_is_refused(page: Any, txvnc: Twistd, vm: VM) -> None:
    """
    After C{txvnc console revoke TOKEN} the token's URL no longer opens.
    """
    console = txvnc.create_console("127.0.0.1", vm.port, new_instance())
    revoked = txvnc.cli("console", "revoke", console.token)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == "Token revoked."

    since = txvnc.log.mark()
    assert_refused(page, console.url)
    txvnc.log.wait_for(
        invalid_token_line(console.token), since=since, timeout=LOG_TIMEOUT
    )


def test_revoke_instance_refuses_only_that_instance(
    page: Any, txvnc: Twistd, vm: VM
) -> None:
    """
    C{txvnc console revoke-instance UUID} revokes every token of that
    instance and leaves other instances' tokens working.
    """
    instance, other = new_instance(), new_instance()
    first = txvnc.create_console("127.0.0.1", vm.port, instance)
    second = txvnc.create_console("127.0.0.1", vm.port, instance)
    kept = txvnc.create_console("127.0.0.1", vm.port, other)

    revoked = txvnc.cli("console", "revoke-instance", instance)
    assert revoked.returncode == 0, revoked.stderr
    assert instance in revoked.stdout

    for console in (first, second):
        since = txvnc.log.mark()
        assert_refused(page, console.url)
        txvnc.log.wait_for(
            invalid_token_line(console.token), since=since, timeout=LOG_TIMEOUT
        )

    state, text = open_console(page, kept.url)
    assert state == "connected", f"the other instance's console did not open: {text!r}"


def test_first_start_creates_a_private_key_file(txvnc: Twistd) -> None:
    """
    twistd creates its missing API key file readable by its owner only.
    """
    mode = stat.S_IMODE(txvnc.key_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert len(txvnc.key_file.read_text().strip()) >= 32


def test_cli_reports_an_unreachable_api(tmp_path: Path) -> None:
    """
    With nothing listening at the API URL the CLI exits non-zero and says
    the API is unreachable, naming the URL.
    """
    key_file = tmp_path / "key"
    key_file.write_text("some-key\n")
    api_url = f"http://127.0.0.1:{free_port()}"
    result = run_cli(
        "--api-url", api_url, "--api-key-file", str(key_file), "--timeout", "10",
        "console", "create", "--host", "127.0.0.1", "--port", "5900",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "token API unreachable" in result.stderr
    assert api_url in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_reports_a_wrong_key(txvnc: Twistd, tmp_path: Path) -> None:
    """
    A key the API does not accept makes the CLI exit non-zero with a message
    that points at the API key.
    """
    wrong = tmp_path / "wrong.key"
    wrong.write_text(secrets.token_urlsafe(32) + "\n")
    result = txvnc.cli(
        "console", "create", "--host", "127.0.0.1", "--port", "5900",
        key_file=wrong,
    )
    assert result.returncode != 0
    assert "API key" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_reports_a_missing_key_file(txvnc: Twistd, tmp_path: Path) -> None:
    """
    A key file that does not exist makes the CLI exit non-zero naming the
    file, before it calls the API.
    """
    missing = tmp_path / "nowhere.key"
    result = txvnc.cli("console", "revoke", "some-token", key_file=missing)
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert "API key" in result.stderr
    assert "Traceback" not in result.stderr
