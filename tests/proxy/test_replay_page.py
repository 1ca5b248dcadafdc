"""
The replay page under C{--web DIR} (docs/recording.md, "The replay page"):
an operator serving their own tree still gets txvnc's replay page and its
files at their own paths, and noVNC at C{/novnc/} for it, unless their tree
has a file of that name, which then wins. Real files, real HTTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from txvnc.proxy.site import console_site, page_dir
from txvnc.service.settings import Settings
from txvnc.tap import Options

from .harness import Stack

PAGE = Path(page_dir())


@pytest.fixture
def stack():
    s = Stack()
    yield s
    pytest_twisted.blockon(Deferred.fromCoroutine(s.stop()))


def novnc(root: Path) -> Path:
    (root / "core").mkdir(parents=True)
    (root / "core" / "rfb.js").write_bytes(b"// noVNC's RFB")
    return root


async def serve(stack: Stack, web: Path, novnc_dir: Path | None, paths: list[str]) -> list[tuple[int, bytes]]:
    port = reactor.listenTCP(
        0, console_site(stack.factory, web_dir=str(web), novnc_dir=str(novnc_dir) if novnc_dir else None), interface="127.0.0.1"
    )
    try:
        out = []
        for path in paths:
            response = await treq.get(f"http://127.0.0.1:{port.getHost().port}{path}", persistent=False)
            out.append((response.code, await treq.content(response)))
        return out
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_operators_tree_still_has_the_replay_page(stack, tmp_path):
    """With --web DIR, /replay.html, its script and styles come from txvnc and noVNC is at /novnc/; the operator's own files are served as before."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_bytes(b"<title>operator</title>")
    got = await serve(stack, web, novnc(tmp_path / "novnc"), ["/replay.html", "/replay.js", "/replay.css", "/console.css", "/novnc/core/rfb.js", "/index.html", "/vnc_auto.html"])
    assert got[:4] == [(200, (PAGE / name).read_bytes()) for name in ("replay.html", "replay.js", "replay.css", "console.css")]
    assert got[4] == (200, b"// noVNC's RFB")
    assert got[5] == (200, b"<title>operator</title>")
    assert got[6][0] == 404  # only the replay page joins the operator's tree


@pytest_twisted.ensureDeferred
async def test_the_operators_files_of_the_same_name_win(stack, tmp_path):
    """A file of the same name in the operator's tree is served instead of txvnc's: they may replace the replay page, or its noVNC."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "replay.html").write_bytes(b"<title>their replay</title>")
    novnc(web / "novnc")
    (web / "novnc" / "core" / "rfb.js").write_bytes(b"// their noVNC")
    got = await serve(stack, web, novnc(tmp_path / "novnc"), ["/replay.html", "/replay.js", "/novnc/core/rfb.js"])
    assert got == [(200, b"<title>their replay</title>"), (200, (PAGE / "replay.js").read_bytes()), (200, b"// their noVNC")]


def test_web_finds_the_novnc_for_the_replay_page(tmp_path, monkeypatch):
    """--web names noVNC itself (Debian's /usr/share/novnc): the replay page uses it; another tree: noVNC is looked for as without --web; --novnc wins."""
    tree = novnc(tmp_path / "usr-share-novnc")
    found = novnc(tmp_path / "found")
    monkeypatch.setenv("TXVNC_NOVNC_DIR", str(found))
    plain = tmp_path / "plain"
    plain.mkdir()

    def settings(*argv: str) -> Settings:
        config = Options()
        config.parseOptions([*argv, "--store", "memory:"])
        return Settings.from_options(config)

    assert settings("--web", str(tree)).novnc == str(tree)
    assert settings("--web", str(plain)).novnc == str(found)
    assert settings("--web", str(plain), "--novnc", str(tree)).novnc == str(tree)
