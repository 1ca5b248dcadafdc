"""
C{txvnc recording ...} and C{txvnc console create --record} against the real
token API resource, in memory, over a real recordings directory.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock

from txvnc import cli
from txvnc.client import OperatorClient
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.recordings import RecordingArchive, ReplayLinks
from txvnc.consoleauth.resource import ConsoleAuthResource

from .consoleauth.test_recordings import NOW, RID, write_recording

KEY = "cli-record-key"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TXVNC_API_KEY", KEY)


class Api:
    def __init__(self, directory: Path) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryTokenStore()
        archive = RecordingArchive(str(directory), ReplayLinks(b"k" * 32))
        self.resource = ConsoleAuthResource(
            self.store, KEY, self.clock, "http://proxy.example:6080", recordings=archive
        )

    async def run(self, *argv: str) -> tuple[int, str, str]:
        args = cli.parse_args(argv)
        out, err = io.StringIO(), io.StringIO()
        client = OperatorClient(StubTreq(self.resource), "http://api.test", KEY, self.clock)
        status = await cli.execute(client, args, out, err)
        return status, out.getvalue(), err.getvalue()


@pytest_twisted.ensureDeferred
async def test_list_show_download_replay_and_delete(tmp_path: Path) -> None:
    """The recording commands list, show, download (a file equal to the stored one), make a replay URL and delete; a missing one exits 4."""
    write_recording(tmp_path)
    api = Api(tmp_path)
    status, out, _ = await api.run("recording", "list", "-f", "json")
    assert status == 0 and [r["id"] for r in json.loads(out)] == [RID]
    status, out, _ = await api.run("recording", "show", RID, "-f", "value", "-c", "target")
    assert (status, out.strip()) == (0, "127.0.0.1:5900")
    saved = tmp_path / "saved.txrec"
    status, out, _ = await api.run("recording", "download", RID, "-o", str(saved))
    assert status == 0 and saved.read_bytes() == (tmp_path / f"{RID}.txrec").read_bytes()
    status, out, _ = await api.run("recording", "replay", RID, "-f", "json")
    assert status == 0
    assert json.loads(out)["replay_url"].startswith("http://proxy.example:6080/replay.html?token=")
    status, out, _ = await api.run("recording", "delete", RID)
    assert status == 0 and "deleted" in out
    status, _, err = await api.run("recording", "show", RID)
    assert status == cli.NOT_FOUND and "no such recording" in err


@pytest_twisted.ensureDeferred
async def test_create_asks_for_a_recording(tmp_path: Path) -> None:
    """console create --record --record-input mints a token whose check answer asks the proxy to record its input too."""
    api = Api(tmp_path)
    status, _, _ = await api.run(
        "console", "create", "--host", "127.0.0.1", "--port", "5900", "--record", "--record-input", "-f", "json"
    )
    assert status == 0
    (record,) = await api.store.list_tokens(None, NOW)
    assert record.options == {"record": True, "record_input": True}
