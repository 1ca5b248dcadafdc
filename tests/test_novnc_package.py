"""
noVNC inside txvnc's package: the build step of C{setup.py} that copies the
pinned npm package (and its licences) into the wheel and the sdist, and
L{txvnc.proxy.site.find_novnc} looking at that copy before anything that
depends on the working directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path
from types import ModuleType

import pytest

from txvnc.proxy import site

REPO = Path(__file__).resolve().parents[1]


def load_setup() -> ModuleType:
    """
    C{setup.py} as a module: it calls C{setup()} only when run as a script,
    as setuptools' build backend does.
    """
    spec = importlib.util.spec_from_file_location("txvnc_setup", REPO / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup_py = load_setup()


def fake_novnc(directory: Path, version: str = "1.7.0") -> Path:
    """
    A directory shaped like the npm package C{@novnc/novnc}: its library,
    the vendored pako, its licences, and files that do not belong in txvnc's
    package.
    """
    for name in [
        "core/rfb.js",
        "core/util/events.js",
        "vendor/pako/lib/zlib/inflate.js",
        "vendor/pako/LICENSE",
        "LICENSE.txt",
        "AUTHORS",
        "README.md",
        "docs/API.md",
        "docs/LICENSE.MPL-2.0",
        "docs/LICENSE.BSD-2-Clause",
    ]:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    (directory / "package.json").write_text(
        json.dumps({"name": "@novnc/novnc", "version": version, "license": "MPL-2.0"})
    )
    return directory


def checkout(root: Path, locked: str = "1.7.0") -> Path:
    """
    A checkout's files that the build step reads: the lock file pinning
    noVNC at C{locked}.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "package-lock.json").write_text(
        json.dumps(
            {
                "lockfileVersion": 3,
                "packages": {"node_modules/@novnc/novnc": {"version": locked}},
            }
        )
    )
    return root


def fake_npm(directory: Path, log: Path) -> Path:
    """
    An C{npm} that records its arguments and, for C{ci}, installs a fake
    noVNC 1.7.0 into the current directory's node_modules.
    """
    npm = directory / "npm"
    target = "node_modules/@novnc/novnc"
    npm.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        f'mkdir -p {target}/core && echo rfb > {target}/core/rfb.js\n'
        f"""echo '{{"version": "1.7.0"}}' > {target}/package.json\n"""
    )
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    return npm


def no_npm(name: str) -> None:
    return None


def test_the_copy_is_the_library_and_its_licences(tmp_path: Path) -> None:
    """The files copied are noVNC's core/, vendor/ (pako's licence in it) and licence files, not its README or API docs."""
    source = fake_novnc(tmp_path / "novnc")
    files = {str(p) for p in setup_py.novnc_files(source)}
    assert files == {
        "core/rfb.js",
        "core/util/events.js",
        "vendor/pako/lib/zlib/inflate.js",
        "vendor/pako/LICENSE",
        "LICENSE.txt",
        "AUTHORS",
        "package.json",
        "docs/LICENSE.MPL-2.0",
        "docs/LICENSE.BSD-2-Clause",
    }


def test_node_modules_is_the_source_when_it_matches_the_lock(tmp_path: Path) -> None:
    """With node_modules holding the locked version, it is copied from as it is: npm is not needed."""
    root = checkout(tmp_path / "checkout")
    fake_novnc(root / "node_modules/@novnc/novnc")
    assert setup_py.novnc_source(root, which=no_npm) == root / "node_modules/@novnc/novnc"


def test_an_unpacked_sdist_uses_its_own_copy(tmp_path: Path) -> None:
    """A tree that already holds txvnc/novnc (an unpacked sdist) is built from it, with no node_modules and no npm."""
    root = checkout(tmp_path / "sdist")
    fake_novnc(root / "txvnc/novnc")
    assert setup_py.novnc_source(root, which=no_npm) == root / "txvnc/novnc"


def test_without_node_modules_npm_ci_runs(tmp_path: Path) -> None:
    """A clean clone (no node_modules) runs `npm ci` in the checkout and copies what it installed."""
    root = checkout(tmp_path / "clone")
    log = tmp_path / "npm.log"
    npm = fake_npm(tmp_path, log)
    source = setup_py.novnc_source(root, which=lambda name: str(npm))
    assert source == root / "node_modules/@novnc/novnc"
    assert (source / "core/rfb.js").is_file()
    assert log.read_text().split()[0] == "ci"


def test_a_stale_node_modules_is_installed_again(tmp_path: Path) -> None:
    """node_modules holding another version than the lock's is replaced by `npm ci`, never packaged."""
    root = checkout(tmp_path / "clone", locked="1.7.0")
    fake_novnc(root / "node_modules/@novnc/novnc", version="1.4.0")
    log = tmp_path / "npm.log"
    npm = fake_npm(tmp_path, log)
    setup_py.novnc_source(root, which=lambda name: str(npm))
    assert log.read_text().startswith("ci")


def test_without_npm_the_build_fails_saying_why(tmp_path: Path) -> None:
    """No node_modules, no packaged copy and no npm: the build stops with a message naming npm and the sdist."""
    root = checkout(tmp_path / "clone")
    with pytest.raises(setup_py.ExecError) as failed:
        setup_py.novnc_source(root, which=no_npm)
    message = str(failed.value)
    assert "npm" in message
    assert "noVNC" in message
    assert "sdist" in message


def test_the_packaged_copy_is_not_in_git(tmp_path: Path) -> None:
    """txvnc/novnc/ is git-ignored: the build writes it into build/ and sdists only."""
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "txvnc/novnc/" in ignored


def test_packaged_copy_comes_before_node_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no TXVNC_NOVNC_DIR, the copy inside the package wins over ./node_modules and /usr/share/novnc."""
    packaged = fake_novnc(tmp_path / "package" / "novnc")
    work = tmp_path / "work"
    fake_novnc(work / "node_modules/@novnc/novnc")
    monkeypatch.chdir(work)
    monkeypatch.delenv("TXVNC_NOVNC_DIR", raising=False)
    monkeypatch.setattr(site, "packaged_novnc", lambda: str(packaged))
    assert site.find_novnc() == str(packaged)


def test_environment_comes_before_the_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TXVNC_NOVNC_DIR still overrides the packaged copy."""
    packaged = fake_novnc(tmp_path / "package" / "novnc")
    chosen = fake_novnc(tmp_path / "chosen")
    monkeypatch.setenv("TXVNC_NOVNC_DIR", str(chosen))
    monkeypatch.setattr(site, "packaged_novnc", lambda: str(packaged))
    assert site.find_novnc() == str(chosen)


def test_without_a_packaged_copy_node_modules_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package with no copy (running from the source tree) still finds ./node_modules."""
    work = tmp_path / "work"
    found = fake_novnc(work / "node_modules/@novnc/novnc")
    monkeypatch.chdir(work)
    monkeypatch.delenv("TXVNC_NOVNC_DIR", raising=False)
    monkeypatch.setattr(site, "packaged_novnc", lambda: str(tmp_path / "none"))
    assert os.path.samefile(site.find_novnc() or "", found)
