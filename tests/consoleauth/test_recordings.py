"""
The recording routes of the token API (txvnc.consoleauth.routes.recordings):
admins list, read, download, delete and replay recordings; a proxy key can
do none of it but ask which recording a replay link opens; a replay link
expires; downloads and replays are audited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock

from txvnc.consoleauth.keys import KeyRing, parse_keys
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.recordings import RecordingArchive, ReplayLinks
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.core.audit import AuditLog
from txvnc.core.recfile import SERVER, RecordEncoder, RecordingHeader

ADMIN_KEY = "admin-key-0123456789"
PROXY_KEY = "proxy-key-0123456789"
API = "http://api.test"
NOW = 1_796_556_153.0
RID = "20261206T112233Z-node-req-1"


class Audit(AuditLog):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


def write_recording(directory: Path, rid: str = RID, instance_uuid: str = "inst-1") -> Path:
    header = RecordingHeader(
        id=rid,
        node="node",
        console_id="req-1",
        instance_uuid=instance_uuid,
        target="127.0.0.1:5900",
        token_hash="ab" * 32,
        started_at=NOW,
    )
    encoder = RecordEncoder()
    path = directory / f"{rid}.txrec"
    path.write_bytes(encoder.start(header) + encoder.batch([(SERVER, 0, b"RFB 003.008\n")]) + encoder.finish())
    return path


class API_:
    def __init__(self, tmp_path: Path, record_dir: bool = True) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.audit = Audit(self.clock)
        keys = KeyRing(tuple(parse_keys(f"admin {ADMIN_KEY}\nproxy {PROXY_KEY}\n", "k")))
        archive = RecordingArchive(str(tmp_path), ReplayLinks(b"k" * 32), 600) if record_dir else None
        self.resource = ConsoleAuthResource(
            MemoryTokenStore(), keys, self.clock, "https://console.test", audit=self.audit, recordings=archive
        )
        self.http = StubTreq(self.resource)

    async def call(self, method: str, path: str, key: str = ADMIN_KEY) -> tuple[int, Any, bytes]:
        response = await self.http.request(method, API + path, headers={"Authorization": "Bearer " + key})
        content = await response.content()
        body = None
        if response.headers.getRawHeaders("content-type") == ["application/json"]:
            body = json.loads(content)
        return response.code, body, content


@pytest.fixture
def api(tmp_path: Path) -> API_:
    write_recording(tmp_path)
    write_recording(tmp_path, "20261206T120000Z-node-req-2", "inst-2")
    return API_(tmp_path)


@pytest_twisted.ensureDeferred
async def test_admins_list_show_download_and_delete(api: API_, tmp_path: Path) -> None:
    """An admin lists recordings (by instance too), reads one's metadata, downloads its file as stored, and deletes it; each download is audited."""
    status, body, _ = await api.call("GET", "/v1/recordings")
    assert status == 200
    assert [r["id"] for r in body["recordings"]] == [RID, "20261206T120000Z-node-req-2"]
    status, body, _ = await api.call("GET", "/v1/recordings?instance_uuid=inst-2")
    assert [r["instance_uuid"] for r in body["recordings"]] == ["inst-2"]
    status, body, _ = await api.call("GET", f"/v1/recordings/{RID}")
    assert status == 200 and body["target"] == "127.0.0.1:5900" and body["started_at"] == "2026-12-06T11:22:33Z"
    status, _, content = await api.call("GET", f"/v1/recordings/{RID}/file")
    assert status == 200 and content == (tmp_path / f"{RID}.txrec").read_bytes()
    assert api.audit.events[-1][0] == "recording.downloaded"
    assert api.audit.events[-1][1]["recording_id"] == RID
    assert (await api.call("DELETE", f"/v1/recordings/{RID}"))[0] == 204
    assert api.audit.events[-1][0] == "recording.deleted"
    assert (await api.call("GET", f"/v1/recordings/{RID}"))[0] == 404
    assert (await api.call("DELETE", f"/v1/recordings/{RID}"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_a_time_range_filters_the_list(api: API_) -> None:
    """since and until take ISO 8601 or POSIX seconds; anything else is a 400."""
    status, body, _ = await api.call("GET", f"/v1/recordings?until={NOW - 10}")
    assert status == 200 and body == {"recordings": []}
    status, body, _ = await api.call("GET", "/v1/recordings?since=2026-12-06T00:00:00Z")
    assert status == 200 and len(body["recordings"]) == 2
    status, body, _ = await api.call("GET", "/v1/recordings?since=yesterday")
    assert status == 400 and "since" in body["error"]


@pytest_twisted.ensureDeferred
async def test_a_replay_link_opens_its_recording_until_it_expires(api: API_) -> None:
    """POST .../replay answers a replay URL on the proxy; the proxy key learns its recording from the token, until the link expires; the replay is audited."""
    status, body, _ = await api.call("POST", f"/v1/recordings/{RID}/replay")
    assert status == 201
    assert body["replay_url"].startswith("https://console.test/replay.html?token=")
    assert body["expires_at"] == "2026-12-06T11:32:33Z"
    assert api.audit.events[-1][0] == "recording.replay"
    token = body["replay_url"].split("token=")[1]
    status, body, _ = await api.call("GET", f"/v1/replays/{token}", PROXY_KEY)
    assert (status, body["recording_id"]) == (200, RID)
    api.clock.advance(600)
    status, body, _ = await api.call("GET", f"/v1/replays/{token}", PROXY_KEY)
    assert status == 404 and "expired" in body["error"]


@pytest_twisted.ensureDeferred
async def test_a_forged_replay_link_opens_nothing(api: API_) -> None:
    """A replay token whose payload was changed, or made with another key, is refused."""
    _, body, _ = await api.call("POST", f"/v1/recordings/{RID}/replay")
    token = body["replay_url"].split("token=")[1]
    payload, mac = token.split(".")
    other = ReplayLinks(b"x" * 32).make(RID, int(NOW) + 600)
    for forged in (payload + "." + mac[:-2] + "AA", other, "nonsense", payload):
        assert (await api.call("GET", f"/v1/replays/{forged}", PROXY_KEY))[0] == 404


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/recordings"),
        ("GET", f"/v1/recordings/{RID}"),
        ("GET", f"/v1/recordings/{RID}/file"),
        ("DELETE", f"/v1/recordings/{RID}"),
        ("POST", f"/v1/recordings/{RID}/replay"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_proxy_key_cannot_list_download_or_replay(api: API_, method: str, path: str) -> None:
    """Every recording route but the replay check needs the admin role: a proxy key gets 403, no key 401."""
    assert (await api.call(method, path, PROXY_KEY))[0] == 403
    assert (await api.call(method, path, "wrong"))[0] == 401
    assert not [e for e, _ in api.audit.events if e.startswith("recording.")]


@pytest_twisted.ensureDeferred
async def test_an_admin_key_cannot_check_replay_links(api: API_) -> None:
    """The replay check is the proxy's: an admin-only key gets 403."""
    assert (await api.call("GET", "/v1/replays/x.y"))[0] == 403


@pytest_twisted.ensureDeferred
async def test_without_a_record_dir_there_are_no_recordings(tmp_path: Path) -> None:
    """Without --record-dir every recording route answers 404 saying so."""
    api = API_(tmp_path, record_dir=False)
    status, body, _ = await api.call("GET", "/v1/recordings")
    assert status == 404 and "--record-dir" in body["error"]


@pytest_twisted.ensureDeferred
async def test_ids_that_could_name_other_files_are_not_found(api: API_) -> None:
    """An id with a dot-dot or an encoded slash never reaches the file system."""
    for rid in ("..%2F..%2Fetc%2Fpasswd", "20261206T112233Z-..%2Fx", "x"):
        assert (await api.call("GET", f"/v1/recordings/{rid}/file"))[0] == 404


def test_retention_deletes_old_recordings_every_hour_and_survives_a_failure(tmp_path: Path) -> None:
    """--record-retention: at start and every hour, recordings last written more than DAYS ago go; a failed purge is logged and the next hour purges again."""
    import os

    from txvnc.service.api import RETENTION_INTERVAL, retention_timer

    clock = Clock()
    clock.advance(NOW)
    old = write_recording(tmp_path)
    os.utime(old, (NOW - 3 * 86400, NOW - 3 * 86400))
    archive = RecordingArchive(str(tmp_path), ReplayLinks(b"k" * 32))
    calls = []
    purge = archive.directory.purge

    def flaky(before: float) -> list[str]:
        calls.append(before)
        if len(calls) == 1:
            raise OSError("the share is away")
        return purge(before)

    archive.directory.purge = flaky  # type: ignore[method-assign]
    timer = retention_timer(clock, archive, 2)
    timer.startService()
    assert old.exists() and calls == [NOW - 2 * 86400]
    clock.advance(RETENTION_INTERVAL)
    assert not old.exists()
    timer.stopService()


@pytest_twisted.ensureDeferred
async def test_a_download_larger_than_memory_bound_is_sent_a_read_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recording of 24 MiB downloads complete and byte for byte, with its length, handed to the transport 64 KiB at a time at most (never read whole)."""
    import os

    from twisted.web.server import Request

    from txvnc.core.streamed import CHUNK

    header = RecordingHeader(
        id=RID, node="node", console_id="req-1", instance_uuid="inst-1",
        target="127.0.0.1:5900", token_hash="ab" * 32, started_at=NOW,
    )  # fmt: skip
    encoder = RecordEncoder()
    path = tmp_path / f"{RID}.txrec"
    with open(path, "wb") as f:
        f.write(encoder.start(header))
        for i in range(96):
            f.write(encoder.batch([(SERVER, i, os.urandom(256 * 1024))]))
        f.write(encoder.finish())
    assert path.stat().st_size > 24 * 1024 * 1024 > 300 * CHUNK
    writes: list[int] = []
    write = Request.write

    def spy(self: Request, data: bytes) -> None:
        writes.append(len(data))
        write(self, data)

    monkeypatch.setattr(Request, "write", spy)
    api = API_(tmp_path)
    response = await api.http.request("GET", f"{API}/v1/recordings/{RID}/file", headers={"Authorization": "Bearer " + ADMIN_KEY})
    assert response.code == 200
    assert response.length == path.stat().st_size  # its Content-Length
    content = await response.content()
    assert content == path.read_bytes()
    assert max(writes) <= CHUNK and len(writes) >= path.stat().st_size // CHUNK
