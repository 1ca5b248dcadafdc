"""
Recordings across nodes (docs/recording.md, "Many nodes"): two proxies write
their recordings into one shared directory, and the token API, reading the
same directory, lists both, serves either, and makes replay links that
either proxy plays.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.support.browser import connect_browser
from tests.support.fakevnc import FakeVNCServer
from tests.support.logscan import SECRETS
from tests.support.twistd import Twistd, start_twistd, stop_all
from txvnc.core.recfile import MAGIC, SERVER, parse, read_file

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ADMIN_KEY = "recording-admin-key-" + "a" * 20
PROXY_KEY = "recording-proxy-key-" + "p" * 20

PIXEL_FORMAT = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
#: An RFB 3.8 server's side of a console: no security, a 4x4 screen, one
#: raw update of it.
SCREEN = (
    b"RFB 003.008\n" + b"\x01\x01" + b"\0\0\0\0"
    + struct.pack("!HH", 4, 4) + PIXEL_FORMAT + struct.pack("!I", 4) + b"test"
    + b"\x00\x00\x00\x01" + struct.pack("!HHHHi", 0, 0, 4, 4, 0) + b"\x80" * 64
)  # fmt: skip


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Twistd, list[Twistd], Path]]:
    """One token API and two proxies, all with the same --record-dir."""
    directory = tmp_path_factory.mktemp("recording-nodes")
    shared = directory / "shared-recordings"
    shared.mkdir()
    keys = directory / "keys"
    keys.write_text(f"admin {ADMIN_KEY}\nproxy {PROXY_KEY}\n")
    keys.chmod(0o600)
    api = start_twistd(
        directory, "--record-dir", str(shared), name="api", api_key_file=keys, proxy=False,
        store=f"sqlite:{directory / 'tokens.sqlite'}", base_url="http://console.example",
    )  # fmt: skip
    proxies = [
        start_twistd(
            directory, "--consoleauth-url", api.api_url, "--node-name", f"proxy-{name}",
            "--record-dir", str(shared), name=f"proxy-{name}", api_key_file=keys, api=False,
        )
        for name in "ab"
    ]  # fmt: skip
    yield api, proxies, shared
    stop_all([api, *proxies])


async def call(method: str, url: str, key: str = ADMIN_KEY) -> tuple[int, bytes]:
    response = await treq.request(method, url, headers={"Authorization": "Bearer " + key}, persistent=False)
    return response.code, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_two_proxies_write_one_directory_and_any_node_serves_it(nodes) -> None:
    """Each proxy records its own console into the shared directory; the API lists both by node, downloads either, and a replay link made for one proxy's recording plays on the other proxy."""
    api, proxies, shared = nodes
    vnc = FakeVNCServer(on_connect=lambda side: side.transport.write(SCREEN))
    try:
        for proxy in proxies:
            token = await api.mint_async("127.0.0.1", vnc.address.port, instance_uuid="shared-1", record=True)
            browser = await connect_browser(proxy.proxy_port, f"token={token}")
            await browser.opened
            await browser.received_at_least(len(SCREEN))
            mark = proxy.log.mark()
            browser.sendClose(1000)
            await browser.closed
            proxy.log.wait_for("console closed", mark)
    finally:
        await vnc.stop()

    # The writers finish their files a moment after the consoles close.
    end = time.monotonic() + 30
    while not all(read_file(str(p)).complete for p in shared.glob("*.txrec")):
        assert time.monotonic() < end, "the recordings were never finished"
        await deferLater(reactor, 0.1)
    status, body = await call("GET", f"{api.api_url}/v1/recordings?instance_uuid=shared-1")
    assert status == 200
    recordings = json.loads(body)["recordings"]
    assert sorted(r["node"] for r in recordings) == ["proxy-a", "proxy-b"]
    assert len({p.name for p in shared.glob("*.txrec")}) == 2
    written_by_a = next(r for r in recordings if r["node"] == "proxy-a")

    status, content = await call("GET", f"{api.api_url}/v1/recordings/{written_by_a['id']}/file")
    assert status == 200 and content == (shared / f"{written_by_a['id']}.txrec").read_bytes()

    status, body = await call("POST", f"{api.api_url}/v1/recordings/{written_by_a['id']}/replay")
    assert status == 201
    replay_token = json.loads(body)["replay_url"].split("token=")[1]
    SECRETS.add(replay_token)  # the session's log scan looks for it
    other = proxies[1]
    response = await treq.get(f"http://127.0.0.1:{other.proxy_port}/replay-data?token={replay_token}", persistent=False)
    data = await treq.content(response)
    assert response.code == 200 and data.startswith(MAGIC)
    header, records = parse(data)
    assert header.node == "proxy-a"
    assert b"".join(d for k, _, d in records if k == SERVER) == SCREEN
    # A proxy key can neither list nor download.
    assert (await call("GET", f"{api.api_url}/v1/recordings", PROXY_KEY))[0] == 403
