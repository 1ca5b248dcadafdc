"""
Recording on the proxy (txvnc.proxy.recorder): the relay's tap writes what
the browser was sent, the input the token asks for and nothing else, off
the reactor thread; a recording that cannot keep up or cannot be written
closes its console with 4007, or lets it go on, as --record-on-failure says.

The proxy runs in memory (L{MemoryProxy}); the writer is the real thread,
writing real files. Its calls back into the reactor are kept by
L{ThreadedClock} and run by the test once the writer is done.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.task import Clock

from txvnc.core.recfile import CLIPBOARD, END, GAP, INPUT, SERVER, inflate, read_file
from txvnc.core.tokens import token_hash
from txvnc.proxy import closecodes
from txvnc.proxy.recorder import (
    DEFAULT_STALL,
    HAND_OVER,
    HAND_OVER_AFTER,
    Recordings,
    input_kind,
)

from .memory import MemoryProxy

KEY_A = b"\x04\x01\x00\x00\x00\x00\x00\x61"
POINTER = b"\x05\x00\x00\x10\x00\x20"
CUT_TEXT = b"\x06\x00\x00\x00\x00\x00\x00\x05hello"
AUTH_RESPONSE = b"\x04" + b"\x01" * 15


class ThreadedClock(Clock):
    """A Clock that keeps what other threads ask it to call."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[tuple[Any, tuple[Any, ...]]] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.from_threads.append((f, args))

    def run_thread_calls(self) -> None:
        calls, self.from_threads = self.from_threads, []
        for f, args in calls:
            f(*args)


def recorded_proxy(tmp_path: Path, **options: Any) -> tuple[MemoryProxy, Recordings, ThreadedClock]:
    clock = ThreadedClock()
    recordings = Recordings(clock, str(tmp_path), "node-1", **options)
    return MemoryProxy(recordings=recordings), recordings, clock


def the_recording(tmp_path: Path) -> Any:
    (path,) = tmp_path.glob("*.txrec")
    return read_file(str(path)), path


def test_only_input_the_token_asks_for_is_kept() -> None:
    """Key and pointer messages count as input only with record_input, clipboard text only with record_clipboard, and a VNC authentication response never."""
    assert input_kind(KEY_A, keys=True, clipboard=False) == INPUT
    assert input_kind(POINTER, keys=True, clipboard=False) == INPUT
    assert input_kind(KEY_A, keys=False, clipboard=True) is None
    assert input_kind(CUT_TEXT, keys=True, clipboard=False) is None
    assert input_kind(CUT_TEXT, keys=False, clipboard=True) == CLIPBOARD
    assert input_kind(AUTH_RESPONSE, keys=True, clipboard=True) is None
    assert input_kind(b"RFB 003.008\n", keys=True, clipboard=True) is None
    assert input_kind(b"\x01", keys=True, clipboard=True) is None


@pytest_twisted.ensureDeferred
async def test_a_recorded_console_writes_what_the_browser_was_sent(tmp_path: Path) -> None:
    """A token minted with record: true writes a recording holding exactly the bytes the browser got, no input, an END record, and neither the token nor a password."""
    proxy, recordings, _ = recorded_proxy(tmp_path)
    token = await proxy.mint(instance_uuid="inst-1", record=True)
    browser = proxy.browser(f"token={token}")
    (vnc,) = proxy.vnc.servers
    for chunk in (b"RFB 003.008\n", b"\x01\x01", b"\x00" * 4, b"frame" * 1000):
        vnc.transport.write(chunk)
        proxy.flush()
    browser.sendMessage(KEY_A, isBinary=True)
    proxy.flush()
    browser.sendClose(1000)
    proxy.flush()
    recordings.stop()

    recording, path = the_recording(tmp_path)
    assert recording.complete
    header = recording.header
    assert (header.instance_uuid, header.target, header.node) == ("inst-1", "10.0.0.5:5900", "node-1")
    assert header.token_hash == token_hash(token) and not header.input
    server = b"".join(d for k, _, d in recording.records if k == SERVER)
    assert hashlib.sha256(server).digest() == browser.sha.digest()
    assert [k for k, _, _ in recording.records if k != SERVER] == [END]
    assert path.name == header.id + ".txrec"
    assert token.encode() not in inflate([path.read_bytes()])[0]


@pytest_twisted.ensureDeferred
async def test_input_is_recorded_only_when_asked(tmp_path: Path) -> None:
    """With record_input the browser's keys and pointer are recorded; its clipboard only with record_clipboard."""
    proxy, recordings, _ = recorded_proxy(tmp_path)
    token = await proxy.mint(record=True, record_input=True)
    browser = proxy.browser(f"token={token}")
    (vnc,) = proxy.vnc.servers
    vnc.transport.write(b"RFB 003.008\n")
    for message in (KEY_A, POINTER, CUT_TEXT):
        browser.sendMessage(message, isBinary=True)
    proxy.flush()
    browser.sendClose(1000)
    proxy.flush()
    recordings.stop()
    recording, _ = the_recording(tmp_path)
    assert recording.header.input and not recording.header.clipboard
    assert [d for k, _, d in recording.records if k == INPUT] == [KEY_A, POINTER]
    assert not [d for k, _, d in recording.records if k == CLIPBOARD]


@pytest_twisted.ensureDeferred
async def test_only_asked_consoles_are_recorded_unless_all_are(tmp_path: Path) -> None:
    """Without record: true a console is not recorded; with --record-all every console is."""
    proxy, recordings, _ = recorded_proxy(tmp_path / "some")
    (tmp_path / "some").mkdir()
    token = await proxy.mint()
    browser = proxy.browser(f"token={token}")
    proxy.flush()
    browser.sendClose(1000)
    proxy.flush()
    recordings.stop()
    assert list((tmp_path / "some").iterdir()) == []

    (tmp_path / "all").mkdir()
    proxy, recordings, _ = recorded_proxy(tmp_path / "all", record_all=True)
    token = await proxy.mint()
    browser = proxy.browser(f"token={token}")
    proxy.flush()
    browser.sendClose(1000)
    proxy.flush()
    recordings.stop()
    assert len(list((tmp_path / "all").glob("*.txrec"))) == 1


async def _overflowing_console(tmp_path: Path, on_failure: str) -> tuple[Any, Any, Any, Recordings]:
    proxy, recordings, _ = recorded_proxy(tmp_path, on_failure=on_failure, max_pending=1000)
    token = await proxy.mint(record=True)
    browser = proxy.browser(f"token={token}")
    (vnc,) = proxy.vnc.servers
    # The writer thread has not run yet; even so, a read past the bound
    # must not wait for it.
    vnc.transport.write(b"x" * 5000)
    proxy.flush()
    return proxy, browser, vnc, recordings


@pytest_twisted.ensureDeferred
async def test_a_recording_that_cannot_keep_up_closes_its_console(tmp_path: Path) -> None:
    """Past twice the memory bound, --record-on-failure close ends the console with 4007 and its reason; the file says why it stops."""
    proxy, browser, _, recordings = await _overflowing_console(tmp_path, "close")
    assert browser.closed.called
    _, code, reason = browser.closed.result
    assert (code, reason) == (4007, closecodes.REASONS[closecodes.RECORDING_FAILED])
    assert proxy.audit.events[-1][1]["why"].startswith("recording failed: over 2000 bytes")
    recordings.stop()
    recording, _ = the_recording(tmp_path)
    (gap,) = [d for k, _, d in recording.records if k == GAP]
    assert "not yet written" in json.loads(gap)["why"]


@pytest_twisted.ensureDeferred
async def test_a_recording_that_cannot_keep_up_may_let_its_console_go_on(tmp_path: Path) -> None:
    """With --record-on-failure continue the console stays open and relays on, unrecorded."""
    proxy, browser, vnc, recordings = await _overflowing_console(tmp_path, "continue")
    assert not browser.closed.called
    vnc.transport.write(b"more")
    proxy.flush()
    assert browser.received == 5004
    browser.sendClose(1000)
    proxy.flush()
    recordings.stop()
    recording, _ = the_recording(tmp_path)
    assert [k for k, _, _ in recording.records] == [GAP]


@pytest_twisted.ensureDeferred
async def test_a_recording_that_cannot_be_written_closes_its_console(tmp_path: Path) -> None:
    """When the file cannot be written (here: its directory is gone), the console closes with 4007 once the writer says so."""
    directory = tmp_path / "gone"
    directory.mkdir()
    proxy, recordings, clock = recorded_proxy(directory)
    token = await proxy.mint(record=True)
    directory.rmdir()
    browser = proxy.browser(f"token={token}")
    (vnc,) = proxy.vnc.servers
    vnc.transport.write(b"RFB 003.008\n")
    proxy.flush()
    recordings.writer.stop()
    clock.run_thread_calls()
    proxy.flush()
    assert browser.closed.called
    assert browser.closed.result[1] == 4007
    assert "No such file or directory" in proxy.audit.events[-1][1]["why"]


@pytest_twisted.ensureDeferred
async def test_a_recording_behind_pauses_the_vnc_reads_until_it_catches_up(tmp_path: Path) -> None:
    """Past the bound (not twice it), the VNC side's reads pause; once the writer has written the backlog they resume, and the recording holds every byte."""
    proxy, recordings, clock = recorded_proxy(tmp_path, max_pending=1000)
    token = await proxy.mint(record=True)
    browser = proxy.browser(f"token={token}")
    (console,) = proxy.factory.consoles
    (vnc,) = proxy.vnc.servers
    # iosim's transports ignore pauses: note them instead.
    vnc_side = console.relay.vnc_transport
    calls: list[str] = []
    vnc_side.pauseProducing = lambda: calls.append("pause")
    vnc_side.resumeProducing = lambda: calls.append("resume")
    vnc.transport.write(b"y" * 1500)
    proxy.flush()
    assert calls == ["pause"] and not browser.closed.called
    recordings.writer.stop()  # writes everything queued
    clock.run_thread_calls()
    assert calls == ["pause", "resume"]
    browser.sendClose(1000)
    proxy.flush()
    recordings.stop()
    recording, _ = the_recording(tmp_path)
    assert recording.server_bytes() == 1500 and recording.complete


@pytest_twisted.ensureDeferred
async def test_a_recording_stuck_behind_fails_after_the_stall_time(tmp_path: Path) -> None:
    """Paused for the stall time without the writer catching up (a stuck disk), the recording fails: 4007 under close."""
    proxy, recordings, clock = recorded_proxy(tmp_path, max_pending=1000)
    token = await proxy.mint(record=True)
    browser = proxy.browser(f"token={token}")
    (vnc,) = proxy.vnc.servers
    vnc.transport.write(b"y" * 1500)
    proxy.flush()
    # The writer's word that it caught up is never delivered here.
    clock.advance(DEFAULT_STALL)
    proxy.flush()
    assert browser.closed.called and browser.closed.result[1] == 4007
    assert "not written in 10s" in proxy.audit.events[-1][1]["why"]
    recordings.stop()


@pytest_twisted.ensureDeferred
async def test_records_reach_the_file_within_the_hand_over_time_or_size(tmp_path: Path) -> None:
    """A console's compressed records go to the writer 10 ms after the first (a kill -9 loses at most that), or at once past 256 KiB; the file reads them before the console ends."""
    proxy, recordings, clock = recorded_proxy(tmp_path)
    token = await proxy.mint(record=True)
    proxy.browser(f"token={token}")
    (vnc,) = proxy.vnc.servers
    vnc.transport.write(b"RFB 003.008\n")
    proxy.flush()
    recordings.writer.stop()  # writes what was handed over: not this yet
    assert the_recording(tmp_path)[0].server_bytes() == 0
    clock.advance(HAND_OVER_AFTER)
    recordings.writer.stop()
    recording, _ = the_recording(tmp_path)
    assert recording.server_bytes() == 12 and not recording.complete
    vnc.transport.write(b"z" * HAND_OVER)
    proxy.flush()
    recordings.writer.stop()  # past the size: handed over without waiting
    assert the_recording(tmp_path)[0].server_bytes() == 12 + HAND_OVER


@pytest_twisted.ensureDeferred
async def test_a_console_still_open_at_shutdown_is_recorded_to_its_end(tmp_path: Path) -> None:
    """
    A console the drain gave up on (aborted: its connectionLost comes after
    the reactor stopped, if ever) when the writer stops at shutdown: what
    it was sent in its last 10 ms (held, not yet handed over) is written
    all the same, with an END record and the frame's end.
    """
    proxy, recordings, _ = recorded_proxy(tmp_path)
    token = await proxy.mint(record=True)
    browser = proxy.browser(f"token={token}")
    (vnc,) = proxy.vnc.servers
    for chunk in (b"RFB 003.008\n", b"\x01\x01", b"\x00" * 4, b"frame" * 1000):
        vnc.transport.write(chunk)
        proxy.flush()
    recordings.stop()  # the console is still open

    recording, _ = the_recording(tmp_path)
    server = b"".join(d for k, _, d in recording.records if k == SERVER)
    assert hashlib.sha256(server).digest() == browser.sha.digest()
    assert [k for k, _, _ in recording.records if k != SERVER] == [END]
    assert recording.complete
