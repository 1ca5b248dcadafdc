"""
Unix socket targets cannot leave C{--allowed-unix-dir} through a symbolic
link: the token API resolves the path at mint, the proxy again at
admission, connects to the resolved path, and checks once more right before
connecting. Real unix sockets, real links, real HTTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Protocol

from tests.support.fakevnc import FakeVNCServer
from tests.support.mint import TOKENS, mint_request
from txvnc.client import ConnectInfo
from txvnc.core.unixpaths import real_unix_target
from txvnc.proxy.admission import TARGET_NOT_ALLOWED
from txvnc.proxy.vnc import UnixPathChanged, VNCClientProtocol, VNCConnector

from .harness import KEY, Stack


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """The allowed socket directory and one outside it."""
    sockets, outside = tmp_path / "sockets", tmp_path / "outside"
    sockets.mkdir()
    outside.mkdir()
    return sockets, outside


@pytest.fixture
def servers():
    started: list[FakeVNCServer] = []

    def start(path: Path) -> FakeVNCServer:
        server = FakeVNCServer(unix_path=str(path))
        started.append(server)
        return server

    yield start
    for server in started:
        pytest_twisted.blockon(maybeDeferred(server.stop))


@pytest.fixture
def make_stack():
    stacks: list[Stack] = []

    def make(**kwargs) -> Stack:
        stack = Stack(**kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        pytest_twisted.blockon(Deferred.fromCoroutine(stack.stop()))


async def mint_status(stack: Stack, unix_path: Path) -> tuple[int, bytes]:
    headers, body = mint_request(
        KEY, {"unix_path": str(unix_path), "instance_uuid": "inst-1", "ttl": 600}
    )
    response = await treq.post(
        stack.api_url + TOKENS, data=body, headers=headers, persistent=False
    )
    return response.code, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_mint_refuses_a_link_out_of_the_allowed_directory(
    dirs, servers, make_stack
):
    """A unix_path inside the allowed directory that is a link to a socket outside it is refused at mint (403)."""
    sockets, outside = dirs
    servers(outside / "vnc.sock")
    (sockets / "escape.sock").symlink_to(outside / "vnc.sock")
    (sockets / "up").symlink_to(outside)
    stack = make_stack(allowed_unix_dirs=(str(sockets),))
    for path in (sockets / "escape.sock", sockets / "up" / "vnc.sock"):
        code, body = await mint_status(stack, path)
        assert code == 403, (path, body)
        assert b"unix_path is not under an allowed directory" in body


@pytest_twisted.ensureDeferred
async def test_proxy_refuses_a_link_planted_after_mint(dirs, servers, make_stack):
    """A socket replaced by a link out of the directory after its token was minted is refused at the upgrade (403) and nothing outside is connected."""
    sockets, outside = dirs
    stranger = servers(outside / "vnc.sock")
    inside = servers(sockets / "vm.sock")
    stack = make_stack(allowed_unix_dirs=(str(sockets),))
    token = await stack.mint(None, unix_path=str(sockets / "vm.sock"))
    await inside.stop()
    (sockets / "vm.sock").unlink(missing_ok=True)
    (sockets / "vm.sock").symlink_to(outside / "vnc.sock")
    assert await stack.raw_upgrade(f"token={token}") == (403, TARGET_NOT_ALLOWED)
    assert stranger.connections == []


@pytest_twisted.ensureDeferred
async def test_a_link_inside_the_directory_connects_to_its_target(
    dirs, servers, make_stack
):
    """A link that stays inside the allowed directory works: the console reaches the socket it resolves to."""
    sockets, _ = dirs
    (sockets / "real").mkdir()
    server = servers(sockets / "real" / "vnc.sock")
    (sockets / "alias.sock").symlink_to(sockets / "real" / "vnc.sock")
    stack = make_stack(allowed_unix_dirs=(str(sockets),))
    token = await stack.mint(None, unix_path=str(sockets / "alias.sock"))
    connected = server.next_connection()
    browser = await stack.open_browser(f"token={token}")
    await browser.opened
    await connected
    browser.sendClose(1000)
    await browser.closed


def test_real_unix_target(dirs, tmp_path):
    """The resolved path is returned only when the written and the real path are both inside; an allowed directory may itself be a link."""
    sockets, outside = dirs
    (sockets / "out").symlink_to(outside)
    (sockets / "in.sock").symlink_to(sockets / "x.sock")
    link_dir = tmp_path / "linked"
    link_dir.symlink_to(sockets)
    allowed = (str(sockets),)
    assert real_unix_target(str(sockets / "x.sock"), allowed) == str(sockets / "x.sock")
    assert real_unix_target(str(sockets / "in.sock"), allowed) == str(sockets / "x.sock")
    assert real_unix_target(str(sockets / "out" / "x.sock"), allowed) is None
    assert real_unix_target(str(outside / "x.sock"), allowed) is None
    assert real_unix_target(str(link_dir / "x.sock"), (str(link_dir),)) == str(
        sockets / "x.sock"
    )


@pytest_twisted.ensureDeferred
async def test_connector_checks_again_right_before_connecting(dirs, servers):
    """A resolved path that turns into a link before the connect is not connected to."""
    sockets, outside = dirs
    stranger = servers(outside / "vnc.sock")
    path = sockets / "vm.sock"
    path.symlink_to(outside / "vnc.sock")
    info = ConnectInfo(
        host="", port=0, instance_uuid=None, console_type="novnc",
        expires_at="", unix_path=str(path),
    )  # fmt: skip
    with pytest.raises(UnixPathChanged):
        await VNCConnector(reactor).connect(info, VNCClientProtocol(Protocol()))
    assert stranger.connections == []
