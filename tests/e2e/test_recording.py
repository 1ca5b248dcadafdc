"""
Console recording end to end (docs/recording.md): a console recorded
through the real page in Chromium, on Xtigervnc and on qemu, replayed in
Chromium from its replay URL, ends on the very frame the user last saw;
a proxy killed with SIGKILL mid-console leaves a file that plays; a full
disk closes a recorded console with 4007 and its reason on the page, or
lets it go on, as --record-on-failure says.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.logscan import SECRETS
from tests.support.twistd import Twistd, start_twistd
from tests.support.vncservers import TigerVNC, tigervnc
from txvnc.core.recfile import read_file
from txvnc.proxy import closecodes

from .conftest import VM, serve_txvnc, sqlite_store
from .test_console import (
    LIT_PIXELS_JS,
    MIN_LIT,
    PAGE_TIMEOUT_MS,
    new_instance,
    open_console,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

#: The canvas's pixels as one value (size and an FNV-1a hash of the RGBA
#: bytes): the canvas named C{window[name]}, or the page's screen.
CANVAS_HASH_JS = """
(name) => {
  const canvas = name ? window[name] : document.querySelector("#screen canvas");
  if (!canvas || !canvas.width || !canvas.height) return null;
  const { data } = canvas.getContext("2d")
    .getImageData(0, 0, canvas.width, canvas.height);
  let h = 2166136261;
  for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i], 16777619) >>> 0;
  return `${canvas.width}x${canvas.height}:${h}`;
}
"""

#: The hash once two polls in a row agree (images decode asynchronously).
SETTLED_JS = (
    "(name) => { const h = (" + CANVAS_HASH_JS + ")(name);"
    " const same = h !== null && window.__lastHash === h;"
    " window.__lastHash = h; return same ? h : false; }"
)

#: The replayed screen shows C{expected}.
SHOWS_JS = "(expected) => (" + CANVAS_HASH_JS + ")(null) === expected"


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """A twistd txvnc that records consoles whose token asks."""
    recordings = tmp_path_factory.mktemp("recordings")
    yield from serve_txvnc(tmp_path_factory, "--record-dir", str(recordings))


@pytest.fixture(scope="module")
def xvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TigerVNC]:
    """An Xtigervnc without VNC security, for the whole module."""
    with tigervnc(tmp_path_factory.mktemp("xvnc"), "-SecurityTypes", "None") as server:
        yield server


def solid_root(display: str, colour: str) -> None:
    """Paint the X root window one colour (a screen change the recording must hold)."""
    subprocess.run(["xsetroot", "-display", display, "-solid", colour], check=True, timeout=30)


def wait_for_pixel(page: Any, rgb: tuple[int, int, int]) -> None:
    """Until the live screen's pixel at (5, 5) is C{rgb}."""
    page.wait_for_function(
        """(rgb) => {
          const c = document.querySelector("#screen canvas");
          if (!c || !c.width) return false;
          const d = c.getContext("2d").getImageData(5, 5, 1, 1).data;
          return d[0] === rgb[0] && d[1] === rgb[1] && d[2] === rgb[2];
        }""",
        arg=list(rgb),
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )


def end_by_revoking(page: Any, server: Twistd, token: str) -> str:
    """
    Revoke the console's token (the proxy closes it with 4001, after every
    byte it recorded) and answer the last frame the page showed.
    """
    page.evaluate("() => { window.liveCanvas = document.querySelector('#screen canvas'); }")
    since = server.log.mark()
    result = server.cli("console", "revoke", "--", token)
    assert result.returncode == 0, result.stderr
    page.wait_for_function(
        "() => document.body.dataset.closeCode === '4001'", timeout=PAGE_TIMEOUT_MS, polling=100
    )
    server.log.wait_for(r"console closed", since)
    return str(page.wait_for_function(SETTLED_JS, arg="liveCanvas", timeout=PAGE_TIMEOUT_MS, polling=300).json_value())


def replay_url(server: Twistd, instance: str) -> tuple[str, dict[str, Any]]:
    """The instance's one recording, and a replay URL for it, through the txvnc command."""
    listed = server.cli("recording", "list", "--instance-uuid", instance, "-f", "json")
    assert listed.returncode == 0, listed.stderr
    (recording,) = json.loads(listed.stdout)
    replay = server.cli("recording", "replay", recording["id"], "-f", "json")
    assert replay.returncode == 0, replay.stderr
    url = json.loads(replay.stdout)["replay_url"]
    SECRETS.add(url.split("token=", 1)[1])  # the session's log scan looks for it
    return url, recording


def open_replay(browser: Any, url: str) -> Any:
    """A new page on the replay URL, once the recording is loaded."""
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(
        "() => document.body.dataset.replayStatus !== undefined", timeout=PAGE_TIMEOUT_MS, polling=100
    )
    status = page.evaluate("() => document.body.dataset.replayStatus")
    assert status == "ready", page.locator("#status").inner_text()
    return page


def assert_replay_ends_on(page: Any, expected: str) -> None:
    """
    Played at 32x to its end, then sought back to the start and forward to
    the end again, the replay shows the C{expected} frame each time.
    """
    page.select_option("#speed", "32")
    page.click("#play")
    page.wait_for_function(
        "() => document.getElementById('status').dataset.state === 'ended'",
        timeout=PAGE_TIMEOUT_MS,
        polling=100,
    )
    page.wait_for_function(SHOWS_JS, arg=expected, timeout=PAGE_TIMEOUT_MS, polling=200)
    page.evaluate("() => { window.txvncReplay.seek(0); window.txvncReplay.seek(window.txvncReplay.duration); }")
    page.wait_for_function(SHOWS_JS, arg=expected, timeout=PAGE_TIMEOUT_MS, polling=200)
    clock = page.locator("#clock").inner_text()
    assert clock.endswith(" UTC") and clock[:4].isdigit(), clock


def test_a_recorded_xtigervnc_console_replays_to_its_last_frame(
    page: Any, browser: Any, recorder: Twistd, xvnc: TigerVNC
) -> None:
    """A console minted with --record on Xtigervnc, used in Chromium, replays in Chromium from its replay URL to the exact last frame the user saw."""
    instance = new_instance()
    console = recorder.create_console("127.0.0.1", xvnc.port, instance, "--record")
    state, text = open_console(page, console.url)
    assert state == "connected", text
    solid_root(xvnc.display, "#2060a0")
    wait_for_pixel(page, (0x20, 0x60, 0xA0))
    solid_root(xvnc.display, "#a06020")
    wait_for_pixel(page, (0xA0, 0x60, 0x20))
    live = end_by_revoking(page, recorder, console.token)

    url, recording = replay_url(recorder, instance)
    assert recording["target"] == f"127.0.0.1:{xvnc.port}" and not recording["input"]
    assert console.token not in json.dumps(recording)
    replay = open_replay(browser, url)
    try:
        assert_replay_ends_on(replay, live)
    finally:
        replay.context.close()


def test_a_recorded_qemu_console_replays_to_its_last_frame(
    page: Any, browser: Any, recorder: Twistd, vm: VM
) -> None:
    """A recorded console of a qemu VM replays in Chromium to the exact last frame the user saw (SeaBIOS's screen)."""
    instance = new_instance()
    console = recorder.create_console("127.0.0.1", vm.port, instance, "--record")
    state, text = open_console(page, console.url)
    assert state == "connected", text
    page.wait_for_function(LIT_PIXELS_JS, arg=MIN_LIT, timeout=PAGE_TIMEOUT_MS, polling=250)
    live = end_by_revoking(page, recorder, console.token)
    url, _ = replay_url(recorder, instance)
    replay = open_replay(browser, url)
    try:
        assert_replay_ends_on(replay, live)
    finally:
        replay.context.close()


def test_an_expired_replay_url_is_refused(page: Any, tmp_path: Path, xvnc: TigerVNC) -> None:
    """A replay URL past --replay-ttl shows the refusal on the page and serves no data."""
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    server = start_twistd(tmp_path, "--record-dir", str(recordings), "--replay-ttl", "1", store=sqlite_store(tmp_path))
    try:
        instance = new_instance()
        console = server.create_console("127.0.0.1", xvnc.port, instance, "--record")
        state, text = open_console(page, console.url)
        assert state == "connected", text
        end_by_revoking(page, server, console.token)
        url, _ = replay_url(server, instance)
        # The link lives one second: poll the proxy until it refuses it
        # (the answer is the event).
        data_url = url.replace("replay.html", "replay-data")
        end = time.monotonic() + 30
        while http_status(data_url) != 403:
            assert time.monotonic() < end, "the replay link never expired"
            time.sleep(0.2)
        page.goto(url)
        page.wait_for_function(
            "() => document.body.dataset.replayStatus !== undefined", timeout=PAGE_TIMEOUT_MS, polling=100
        )
        assert page.evaluate("() => document.body.dataset.replayStatus") == "403"
        assert page.locator("#status").inner_text() == "The replay link is invalid or has expired."
    finally:
        server.stop()


def test_a_proxy_killed_mid_console_leaves_a_playable_recording(
    page: Any, browser: Any, tmp_path: Path, vm: VM
) -> None:
    """After SIGKILL of the proxy mid-console, the recording reads up to its last complete record and replays SeaBIOS's screen in Chromium."""
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    server = start_twistd(tmp_path, "--record-dir", str(recordings), store=sqlite_store(tmp_path))
    try:
        instance = new_instance()
        console = server.create_console("127.0.0.1", vm.port, instance, "--record")
        page.add_init_script(COUNT_RECEIVED_JS)
        state, text = open_console(page, console.url)
        assert state == "connected", text
        page.wait_for_function(LIT_PIXELS_JS, arg=MIN_LIT, timeout=PAGE_TIMEOUT_MS, polling=250)
        (path,) = recordings.glob("*.txrec")
        flushed = _wait_until_flushed(path, page.evaluate("() => window.receivedBytes"))
        server.kill()
        page.goto("about:blank")
        recording = read_file(str(path))
        assert not recording.complete and recording.server_bytes() >= flushed
        server = server.rerun()
        url, _ = replay_url(server, instance)
        replay = open_replay(browser, url)
        try:
            replay.evaluate("() => window.txvncReplay.seek(window.txvncReplay.duration)")
            replay.wait_for_function(LIT_PIXELS_JS, arg=MIN_LIT, timeout=PAGE_TIMEOUT_MS, polling=250)
        finally:
            replay.context.close()
    finally:
        server.stop(clean=False)


#: Counts the binary bytes every WebSocket of the page receives.
COUNT_RECEIVED_JS = """
window.receivedBytes = 0;
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => {
      if (e.data && e.data.byteLength) window.receivedBytes += e.data.byteLength;
    });
  }
};
"""


def _wait_until_flushed(path: Path, shown: int, timeout: float = 60.0) -> int:
    """
    Poll the recording until it holds the C{shown} bytes the page has
    received (the writer thread flushes a moment after the proxy sends;
    reading the file is the only way to see it); the bytes it holds.
    """
    assert shown > 1000
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got = read_file(str(path)).server_bytes()
        except ValueError:
            got = 0
        if got >= shown:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{path} never held the {shown} bytes the page got")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, filled to the last byte: every recording write fails with ENOSPC."""
    mount = tmp_path / "full"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs (as root): {result.stderr}", pytrace=False)
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("policy", ["close", "continue"])
def test_a_full_disk_follows_the_failure_policy(
    page: Any, tmp_path: Path, full_disk: Path, xvnc: TigerVNC, policy: str
) -> None:
    """On a full disk, --record-on-failure close ends a recorded console with 4007 and says why on the page; continue keeps it open, unrecorded, and logs why."""
    server = start_twistd(
        tmp_path, "--record-dir", str(full_disk), "--record-on-failure", policy, store=sqlite_store(tmp_path)
    )
    try:
        since = server.log.mark()
        console = server.create_console("127.0.0.1", xvnc.port, new_instance(), "--record")
        page.goto(console.url)
        if policy == "close":
            page.wait_for_function(
                "() => document.body.dataset.closeCode === '4007'", timeout=PAGE_TIMEOUT_MS, polling=100
            )
            reason = closecodes.REASONS[closecodes.RECORDING_FAILED]
            assert page.locator("#status").inner_text() == f"Disconnected: {reason}."
            server.log.wait_for(r"recording .* failed: cannot write .*No space left on device", since)
        else:
            server.log.wait_for(r"recording .* stopped: cannot write .*No space left on device", since)
            solid_root(xvnc.display, "#30a050")
            wait_for_pixel(page, (0x30, 0xA0, 0x50))
            assert page.locator("#status").get_attribute("data-state") == "connected"
    finally:
        server.stop()
    assert os.path.ismount(full_disk)
