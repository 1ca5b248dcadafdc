"""
The console page's controls around noVNC's screen, in headless Chromium on
a real C{twistd txvnc} and a real Xtigervnc: the machine's clipboard
reaching the page, the three scaling modes, the extra-keys bar, keyboard
and screen-reader access, and the token's policy hiding what it does not
allow.

What the page sends is read from the WebSocket's frames as Chromium sent
them (RFB KeyEvents), so these tests see the keys the machine gets.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import OutputWatcher, clean_env, spawn, stop
from tests.support.twistd import Twistd
from tests.support.vncservers import TigerVNC, require, tigervnc

from .test_console import PAGE_TIMEOUT_MS

pytestmark = [pytest.mark.e2e, pytest.mark.vnc_servers, pytest.mark.timeout(120)]

XCLIP = shutil.which("xclip")

#: keysyms (X11's keysymdef.h, as noVNC's core/input/keysym.js).
ESCAPE, TAB, DELETE, F1 = 0xFF1B, 0xFF09, 0xFFFF, 0xFFBE
CONTROL_L, ALT_L, SUPER_L = 0xFFE3, 0xFFE9, 0xFFEB


@pytest.fixture
def vnc_server(tmp_path: Path) -> Iterator[TigerVNC]:
    """
    An Xtigervnc of 640x480 with no password, for one test (remote resize
    changes its screen).
    """
    with tigervnc(tmp_path, "-SecurityTypes", "None") as server:
        yield server


#: Installed before the page's own scripts: records the RFB key events
#: (KeyEvent, and QEMU's extended key event when the server offers it) in
#: every binary message the page sends, as [keysym, down] pairs.
RECORD_KEYS_JS = """
window.sentKeys = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data)
    : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : null;
  const view = bytes && new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; bytes && i < bytes.length;) {
    if (bytes[i] === 4 && i + 8 <= bytes.length) {
      window.sentKeys.push([view.getUint32(i + 4), bytes[i + 1] === 1]);
      i += 8;
    } else if (bytes[i] === 255 && bytes[i + 1] === 0 && i + 12 <= bytes.length) {
      window.sentKeys.push([view.getUint32(i + 4), view.getUint16(i + 2) === 1]);
      i += 12;
    } else {
      break;  // another message: noVNC sends each in a send of its own
    }
  }
  return send.call(this, data);
};
"""


class SentKeys:
    """
    The key events a page sent to the machine, as (keysym, down) pairs.
    """

    def __init__(self, page: Any) -> None:
        self._page = page
        page.add_init_script(RECORD_KEYS_JS)

    def mark(self) -> int:
        return int(self._page.evaluate("() => window.sentKeys.length"))

    def since(self, mark: int) -> list[tuple[int, bool]]:
        return [(k, d) for k, d in self._page.evaluate("(m) => window.sentKeys.slice(m)", mark)]

    def wait(self, mark: int, expected: list[tuple[int, bool]]) -> None:
        """
        Wait until the page has sent C{expected} since C{mark}, then check
        it sent exactly that.
        """
        self._page.wait_for_function(
            "([m, n]) => window.sentKeys.length >= m + n",
            arg=[mark, len(expected)],
            timeout=PAGE_TIMEOUT_MS,
        )
        assert self.since(mark) == expected


def open_console(page: Any, txvnc: Twistd, port: int, **fields: Any) -> None:
    """
    Mint a console for C{port} (with token C{fields}) and open it until it
    is connected.
    """
    token = txvnc.mint("127.0.0.1", port, **fields)
    page.goto(f"{txvnc.base_url}/vnc_auto.html?token={token}")
    page.wait_for_function(
        "() => document.getElementById('status').dataset.state === 'connected'",
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )


def tap(keysym: int) -> list[tuple[int, bool]]:
    return [(keysym, True), (keysym, False)]


# The machine's clipboard


def put_on_clipboard(display: str, text: str, directory: Path) -> Any:
    """
    Own the X CLIPBOARD selection of C{display} with C{text}, as a program on
    the machine copying would; the xclip process serving it.
    """
    xclip = require(XCLIP, "xclip")
    process = spawn(
        [xclip, "-quiet", "-selection", "clipboard", "-i"],
        stdin=True,
        env=clean_env(DISPLAY=display),
        cwd=directory,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(text)
    process.stdin.close()
    # -quiet: it says when it owns the selection, then serves it.
    OutputWatcher(process.stdout, "xclip").wait_for(r"Waiting for selection requests")
    return process


def test_machine_clipboard_reaches_the_page_and_the_browser(
    page: Any, txvnc: Twistd, vnc_server: TigerVNC, tmp_path: Path
) -> None:
    """Text copied on the machine appears in the clipboard panel and, where the browser allows, on the browser's clipboard."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_console(page, txvnc, vnc_server.port)
    text = "copied on the machine: ünïcode ✓"
    xclip = put_on_clipboard(vnc_server.display, text, tmp_path)
    try:
        page.wait_for_function(
            "(t) => document.getElementById('clipboard-text').value === t",
            arg=text,
            timeout=PAGE_TIMEOUT_MS,
        )
        page.wait_for_function("() => window.txvnc.clipboard.copied === 1", timeout=PAGE_TIMEOUT_MS)
        assert page.evaluate("() => navigator.clipboard.readText()") == text
        # The panel is one click away, and tells what happened.
        page.click("#clipboard-toggle")
        assert page.locator("#clipboard-panel").is_visible()
        assert page.locator("#clipboard-toggle").get_attribute("aria-expanded") == "true"
        assert page.get_by_label("Text copied on the machine, or to send to it").input_value() == text
        assert "on this computer's clipboard too" in page.locator("#clipboard-note").inner_text()
    finally:
        stop(xclip, must_obey=False)


def test_machine_clipboard_when_the_browser_refuses(
    page: Any, txvnc: Twistd, vnc_server: TigerVNC, tmp_path: Path
) -> None:
    """When the browser refuses to let the page write its clipboard, the text still waits in the panel, which says so."""
    page.add_init_script(
        "navigator.clipboard.writeText = () => Promise.reject(new DOMException('refused', 'NotAllowedError'));"
    )
    open_console(page, txvnc, vnc_server.port)
    xclip = put_on_clipboard(vnc_server.display, "refused text", tmp_path)
    try:
        page.wait_for_function(
            "() => window.txvnc.clipboard.received === 1", timeout=PAGE_TIMEOUT_MS
        )
        assert page.evaluate("() => window.txvnc.clipboard.copied") == 0
        assert page.locator("#clipboard-toggle").get_attribute("data-unread") == "true"
        page.click("#clipboard-toggle")
        assert page.locator("#clipboard-text").input_value() == "refused text"
        note = page.locator("#clipboard-note").inner_text()
        assert "did not allow" in note, note
        # A screen reader heard it while the panel was closed.
        assert "machine copied text" in page.locator("#announce").inner_text()
    finally:
        stop(xclip, must_obey=False)


# Scaling


def canvas_box(page: Any) -> dict[str, float]:
    return dict(
        page.evaluate(
            """() => {
              const c = document.querySelector('#screen canvas');
              const s = c.parentElement;
              const r = c.getBoundingClientRect();
              return {width: c.width, height: c.height, shownWidth: r.width, shownHeight: r.height,
                      scrollWidth: s.scrollWidth, clientWidth: s.clientWidth,
                      screenWidth: document.getElementById('screen').clientWidth,
                      screenHeight: document.getElementById('screen').clientHeight};
            }"""
        )
    )


def wait_canvas(page: Any, condition: str) -> dict[str, float]:
    """Wait until C{condition} (JS over the canvas C{c} and its screen C{s}) holds."""
    page.wait_for_function(
        f"() => {{ const c = document.querySelector('#screen canvas');"
        f" const s = document.getElementById('screen'); return c && ({condition}); }}",
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )
    return canvas_box(page)


def test_scaling_modes_change_the_canvas(page: Any, txvnc: Twistd, vnc_server: TigerVNC) -> None:
    """Fit scales the 640x480 screen to the window, 1:1 shows it unscaled and scrollable, and remote resize makes the machine's screen the window's size."""
    open_console(page, txvnc, vnc_server.port)
    assert page.get_by_label("Scaling").input_value() == "fit"
    box = wait_canvas(page, "c.width === 640 && c.getBoundingClientRect().width > 640")
    assert box["height"] == 480
    assert box["shownHeight"] == pytest.approx(box["screenHeight"], abs=2)

    page.get_by_label("Scaling").select_option("native")
    box = wait_canvas(page, "c.getBoundingClientRect().width === 640")
    assert box["shownHeight"] == 480
    # Smaller than the machine's screen: scroll bars, not scaling.
    page.set_viewport_size({"width": 480, "height": 360})
    box = wait_canvas(page, "c.parentElement.scrollWidth > c.parentElement.clientWidth")
    assert box["shownWidth"] == 640
    assert page.evaluate("() => document.body.dataset.scaling") == "native"

    page.set_viewport_size({"width": 900, "height": 700})
    page.get_by_label("Scaling").select_option("remote")
    # The machine's framebuffer itself takes the screen area's size.
    box = wait_canvas(page, "c.width === s.clientWidth && c.height === s.clientHeight")
    assert (box["width"], box["height"]) != (640, 480)
    assert box["shownWidth"] == box["width"]
    # The choice is remembered for the next console.
    assert page.evaluate("() => localStorage.getItem('txvnc.scaling')") == "remote"


# The extra keys


def test_extra_keys_send_their_keys(page: Any, txvnc: Twistd, vnc_server: TigerVNC) -> None:
    """Esc, Tab, the Ctrl/Alt/Windows toggles, Ctrl+Alt+Del and Ctrl+Alt+F1…F12 send their keysyms; a held modifier stays down across other keys."""
    sent = SentKeys(page)
    open_console(page, txvnc, vnc_server.port)

    mark = sent.mark()
    page.click("#key-esc")
    page.click("#key-tab")
    sent.wait(mark, tap(ESCAPE) + tap(TAB))

    mark = sent.mark()
    ctrl = page.get_by_role("button", name="Ctrl", exact=True)
    ctrl.click()
    assert ctrl.get_attribute("aria-pressed") == "true"
    page.click("#ctrl-alt-del")  # Ctrl is already down: only Alt is added
    ctrl.click()
    assert ctrl.get_attribute("aria-pressed") == "false"
    sent.wait(
        mark,
        [(CONTROL_L, True), (ALT_L, True), *tap(DELETE), (ALT_L, False), (CONTROL_L, False)],
    )  # fmt: skip

    mark = sent.mark()
    toggle = page.locator("#fkeys-toggle")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    for n in (1, 12):
        page.get_by_role("button", name=f"Ctrl+Alt+F{n}", exact=True).click()
    expected: list[tuple[int, bool]] = []
    for n in (1, 12):
        keysym = F1 + n - 1
        expected += [(CONTROL_L, True), (ALT_L, True), *tap(keysym), (ALT_L, False), (CONTROL_L, False)]
    sent.wait(mark, expected)

    mark = sent.mark()
    windows = page.get_by_role("button", name="Windows", exact=True)
    windows.click()
    assert windows.get_attribute("aria-pressed") == "true"
    # A click gives the keyboard back to the screen: typed keys go there,
    # with Windows still held.
    assert page.evaluate("() => document.activeElement.tagName") == "CANVAS"
    windows.click()
    sent.wait(mark, [(SUPER_L, True), (SUPER_L, False)])


def test_keyboard_and_screen_reader_use(page: Any, txvnc: Twistd, vnc_server: TigerVNC) -> None:
    """Every control is a named button or a labelled field, reached with Tab in reading order with a visible focus; keys work from the keyboard without losing the focus; Ctrl+Alt+Shift leaves the screen."""
    sent = SentKeys(page)
    open_console(page, txvnc, vnc_server.port)
    snapshot = page.locator("body").aria_snapshot()
    for line in (
        'combobox "Scaling"',
        'button "Clipboard"',
        'button "Paste"',
        'button "Full screen"',
        'group "Keys to send to the machine"',
        'button "Esc"',
        'button "Ctrl"',
        'button "Ctrl+Alt+Del"',
        'button "Ctrl+Alt+F…"',
        'application "The machine\'\'s screen',
    ):
        assert line in snapshot, f"{line!r} not in\n{snapshot}"
    # Toggles say whether they are down, the disclosure whether it is open.
    for toggle in ("#key-ctrl", "#key-alt", "#key-super"):
        assert page.locator(toggle).get_attribute("aria-pressed") == "false"
    assert page.locator("#fkeys-toggle").get_attribute("aria-expanded") == "false"
    assert page.locator("#fkeys-toggle").get_attribute("aria-controls") == "fkeys"

    order = []
    page.locator("body").focus()
    for _ in range(12):
        page.keyboard.press("Tab")
        order.append(page.evaluate("() => document.activeElement.id || document.activeElement.tagName"))
        if order[-1] == "CANVAS":
            break
    assert order == [
        "scaling", "clipboard-toggle", "paste", "fullscreen",
        "key-esc", "key-tab", "key-ctrl", "key-alt", "key-super", "ctrl-alt-del", "fkeys-toggle",
        "CANVAS",
    ]  # fmt: skip
    # The focus ring shows on the screen too (noVNC turns it off).
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"

    # Out of the screen, with no key reaching the machine whole.
    mark = sent.mark()
    page.keyboard.down("Control")
    page.keyboard.down("Alt")
    page.keyboard.down("Shift")
    page.keyboard.up("Shift")
    page.keyboard.up("Alt")
    page.keyboard.up("Control")
    page.wait_for_function(
        "() => document.activeElement.id === 'scaling'", timeout=PAGE_TIMEOUT_MS
    )
    # Ctrl and Alt went down and came back up; Shift never went down.
    assert sorted(sent.since(mark)) == sorted(
        [(CONTROL_L, True), (ALT_L, True), (ALT_L, False), (CONTROL_L, False)]
    )

    # Enter on a key button sends it and keeps the focus there.
    page.locator("#key-esc").focus()
    mark = sent.mark()
    page.keyboard.press("Enter")
    sent.wait(mark, tap(ESCAPE))
    assert page.evaluate("() => document.activeElement.id") == "key-esc"
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # Ctrl held
    assert page.locator("#key-ctrl").get_attribute("aria-pressed") == "true"
    page.keyboard.press("Space")
    assert page.locator("#key-ctrl").get_attribute("aria-pressed") == "false"


# The token's policy


#: For each policy, the controls that show (the rest of this list hides).
GATED = ["#keys", "#paste", "#clipboard-toggle", "#clipboard-copy", "#clipboard-send"]
POLICIES = {
    "view only": ({"view_only": True, "clipboard": "both"}, ["#clipboard-toggle", "#clipboard-copy"]),
    "to the machine only": ({"view_only": False, "clipboard": "to_vm"}, ["#keys", "#paste", "#clipboard-toggle", "#clipboard-send"]),
    "from the machine only": ({"view_only": False, "clipboard": "from_vm"}, ["#keys", "#clipboard-toggle", "#clipboard-copy"]),
    "no clipboard": ({"view_only": False, "clipboard": "none"}, ["#keys"]),
    "view only, no clipboard": ({"view_only": True, "clipboard": "none"}, []),
    "everything": ({"view_only": False, "clipboard": "both"}, GATED),
}


def shown(page: Any) -> list[str]:
    return [
        selector
        for selector in GATED
        if page.evaluate(
            "(s) => !document.querySelector(s).closest('[hidden]')", selector
        )
    ]


@pytest.mark.parametrize("name", list(POLICIES))
def test_policy_hides_what_it_does_not_allow(
    page: Any, txvnc: Twistd, vnc_server: TigerVNC, name: str
) -> None:
    """The proxy's policy notice hides the input controls of a view-only console and the clipboard controls of a direction it does not allow."""
    policy, visible = POLICIES[name]
    open_console(page, txvnc, vnc_server.port, **policy)
    page.wait_for_function(
        "(v) => document.body.dataset.viewOnly === String(v)",
        arg=policy["view_only"],
        timeout=PAGE_TIMEOUT_MS,
    )
    page.wait_for_function(
        "(c) => document.body.dataset.clipboard === c", arg=policy["clipboard"], timeout=PAGE_TIMEOUT_MS
    )
    if "#clipboard-toggle" in visible:
        page.click("#clipboard-toggle")
    assert shown(page) == visible
    view_only = policy["view_only"]
    assert page.evaluate("() => window.txvnc.rfb.viewOnly") is view_only
    remote = page.locator("#scaling option[value=remote]")
    assert remote.is_disabled() is view_only
    status = page.locator("#status").inner_text()
    assert status.endswith("(view only)") is view_only, status


def test_view_only_token_hides_the_input_controls(
    page: Any, txvnc: Twistd, vnc_server: TigerVNC
) -> None:
    """A console minted view-only shows no extra keys, no paste and no remote resize: the proxy tells the page its token's policy."""
    open_console(page, txvnc, vnc_server.port, view_only=True, clipboard="from_vm")
    page.wait_for_function("() => document.body.dataset.viewOnly === 'true'", timeout=10_000)
    page.click("#clipboard-toggle")
    assert shown(page) == ["#clipboard-toggle", "#clipboard-copy"]
    assert page.locator("#status").inner_text() == "Connected to txvnc-test (view only)"
