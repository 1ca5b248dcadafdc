"""
Files served under C{--web} stay under it: a symbolic link that leads out of
the directory is not followed; one that stays inside is. Real files, real
links, real HTTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from txvnc.proxy.site import console_site

from .harness import Stack

SECRET = b"outside the web root"


@pytest.fixture
def stack():
    s = Stack()
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


@pytest.fixture
def web(tmp_path: Path) -> Path:
    """
    A --web tree with a page, a link to it, and links out of the tree (to
    a file, to a directory, and through a linked directory).
    """
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "web"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(b"<title>page</title>")
    (root / "sub" / "inner.js").write_bytes(b"inner")
    (root / "alias.html").symlink_to("index.html")
    (root / "sub" / "up.html").symlink_to("../index.html")
    (root / "secret.txt").symlink_to(outside / "secret.txt")
    (root / "out").symlink_to(outside)
    (root / "sub" / "rel.txt").symlink_to("../../outside/secret.txt")
    (root / "etc").symlink_to("/etc")
    return root


async def get(site_port: int, path: str) -> tuple[int, bytes]:
    response = await treq.get(f"http://127.0.0.1:{site_port}{path}", persistent=False)
    return response.code, await treq.content(response)


@pytest.mark.parametrize(
    "path",
    ["/secret.txt", "/out/secret.txt", "/sub/rel.txt", "/etc/passwd", "/etc/hostname"],
)
@pytest_twisted.ensureDeferred
async def test_links_out_of_the_web_directory_are_not_followed(stack, web, path):
    """A link under --web to a file or directory outside it answers 404 and nothing of the target."""
    port = reactor.listenTCP(
        0, console_site(stack.factory, web_dir=str(web)), interface="127.0.0.1"
    )
    try:
        code, body = await get(port.getHost().port, path)
    finally:
        await port.stopListening()
    assert code == 404
    assert SECRET not in body and b"root:" not in body


@pytest.mark.parametrize(
    "path, content",
    [
        ("/index.html", b"<title>page</title>"),
        ("/alias.html", b"<title>page</title>"),
        ("/sub/up.html", b"<title>page</title>"),
        ("/sub/inner.js", b"inner"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_files_and_links_inside_are_served(stack, web, path, content):
    """Files under --web, and links that stay inside it, are served as before."""
    port = reactor.listenTCP(
        0, console_site(stack.factory, web_dir=str(web)), interface="127.0.0.1"
    )
    try:
        code, body = await get(port.getHost().port, path)
    finally:
        await port.stopListening()
    assert (code, body) == (200, content)


@pytest_twisted.ensureDeferred
async def test_a_web_directory_reached_through_a_link_still_works(stack, web, tmp_path):
    """--web may itself be a link (a versioned release directory): its files are served."""
    current = tmp_path / "current"
    current.symlink_to(web)
    port = reactor.listenTCP(
        0, console_site(stack.factory, web_dir=str(current)), interface="127.0.0.1"
    )
    try:
        assert await get(port.getHost().port, "/index.html") == (200, b"<title>page</title>")
        code, _ = await get(port.getHost().port, "/secret.txt")
    finally:
        await port.stopListening()
    assert code == 404
