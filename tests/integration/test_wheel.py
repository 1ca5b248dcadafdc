"""
txvnc as a new user gets it: a wheel built from a clean copy of the tree
(no node_modules), installed into a fresh venv, serving a console page that
connects with the noVNC inside the package; and an sdist that carries noVNC
so that a wheel built from it needs no npm.

Slow: each build and the fresh venv's install fetch packages from the
package index as C{pip install} would.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import OutputWatcher, clean_env, free_ports, spawn, stop
from tests.support.twistd import require
from tests.support.vncservers import tigervnc

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
]

#: What every copy of noVNC in txvnc's package must hold: the library and
#: its licences (MPL-2.0 core, pako's MIT, the rest of noVNC's).
NOVNC_FILES = (
    "core/rfb.js",
    "vendor/pako/lib/zlib/inflate.js",
    "vendor/pako/LICENSE",
    "LICENSE.txt",
    "docs/LICENSE.MPL-2.0",
)

#: Seconds a build or an install may take on a busy 2-core machine.
PIP_TIMEOUT = 600


def clean_copy(destination: Path) -> Path:
    """
    The checkout's tracked files as they are now (C{git ls-files}), as a
    fresh clone would have them: no node_modules, no build output, no venv.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    assert not (destination / "node_modules").exists()
    return destination


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """
    Run a build or install step; its output is shown when it fails.
    """
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.returncode == 0, (
        f"{argv} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A fresh venv's bin directory (the system's Python, nothing installed).
    """
    directory = tmp_path_factory.mktemp("venv")
    run(["python3", "-m", "venv", directory])
    return directory / "bin"


def packaged(names: list[str], prefix: str) -> set[str]:
    """
    The noVNC files among C{names} of an archive, relative to C{prefix}
    (the archive's C{txvnc/novnc/}).
    """
    return {n[len(prefix) :] for n in names if n.startswith(prefix)}


@pytest.fixture(scope="module")
def installed(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The fresh venv, with txvnc installed from a wheel built from a clean
    copy of the tree; the wheel must carry noVNC and its licences.
    """
    source = clean_copy(tmp_path_factory.mktemp("clone"))
    dist = tmp_path_factory.mktemp("dist")
    run([venv / "pip", "wheel", "-q", "--no-deps", "-w", dist, source], env=clean_env())
    (wheel,) = dist.glob("txvnc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = packaged(archive.namelist(), "txvnc/novnc/")
    missing = [name for name in NOVNC_FILES if name not in files]
    assert not missing, f"the wheel lacks {missing}"
    run([venv / "pip", "install", "-q", wheel], env=clean_env())
    return venv


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """
    The system's headless Chromium.
    """
    require(os.access(CHROMIUM, os.X_OK), CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


def mint(api_port: int, key: str, vnc_port: int) -> str:
    """
    A console token for the VNC server on C{vnc_port}.
    """
    connection = http.client.HTTPConnection("127.0.0.1", api_port, timeout=30)
    try:
        connection.request(
            "POST",
            "/v1/tokens",
            json.dumps({"host": "127.0.0.1", "port": vnc_port}),
            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 201, answer
    return str(answer["access_url"])


def test_the_wheel_serves_a_working_console(
    installed: Path, browser: object, tmp_path: Path
) -> None:
    """
    The installed wheel's C{twistd txvnc}, with no node_modules anywhere and
    no TXVNC_NOVNC_DIR, serves noVNC from inside the package and the
    console page connects to a real VNC server.
    """
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env()
    env["PATH"] = f"{installed}:{env['PATH']}"
    proxy_port, api_port = free_ports(2)
    argv = [
        installed / "twistd", "-n", "--pidfile=", "txvnc",
        "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
        "--api-listen", f"tcp:{api_port}:interface=127.0.0.1",
        "--store", "memory:",
        "--api-key-file", work / "api.key",
        "--allowed-target", "127.0.0.1:1024-65535",
        "--base-url", f"http://127.0.0.1:{proxy_port}",
    ]  # fmt: skip
    process = spawn(argv, cwd=work, env=env)
    assert process.stdout is not None
    log = OutputWatcher(process.stdout, "twistd txvnc (wheel)", work / "twistd.log")
    try:
        served = log.wait_for(r"noVNC from (\S+)").group(1)
        assert served.startswith(str(installed.parent / "lib")), served
        assert served.endswith("site-packages/txvnc/novnc"), served
        log.wait_for(rf"starting on {proxy_port}\b")
        log.wait_for(rf"starting on {api_port}\b")
        log.wait_for(r"signals: SIGTERM shuts down gracefully")
        key = (work / "api.key").read_text().strip()
        with tigervnc(work, "-SecurityTypes", "None") as vnc:
            url = mint(api_port, key, vnc.port)
            page = browser.new_page()  # type: ignore[attr-defined]
            try:
                page.goto(url)
                page.wait_for_function(
                    "() => document.getElementById('status').dataset.state"
                    " !== 'connecting'",
                    timeout=60_000,
                )
                status = page.locator("#status")
                assert status.get_attribute("data-state") == "connected", (
                    status.inner_text()
                )
                size = page.evaluate(
                    "() => { const c = document.querySelector('#screen canvas');"
                    " return c ? [c.width, c.height] : null; }"
                )
                assert size == [640, 480], size
            finally:
                page.close()
    finally:
        code = stop(process)
        log.wait_closed()
    text = log.text()
    assert code in (0, -15), text
    assert "Traceback" not in text, text


def test_the_sdist_carries_novnc_and_builds_without_npm(
    venv: Path, tmp_path: Path
) -> None:
    """
    The sdist of a clean copy holds noVNC and its licences, and a wheel
    built from it (no node_modules, no npm on PATH) carries them too.
    """
    source = clean_copy(tmp_path / "clone")
    dist = tmp_path / "dist"
    run([venv / "pip", "install", "-q", "build"], env=clean_env())
    run([venv / "python", "-m", "build", "-q", "--sdist", "-o", dist, source], env=clean_env())
    (sdist,) = dist.glob("txvnc-*.tar.gz")
    top = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        in_sdist = packaged(
            [m.name for m in archive.getmembers() if m.isfile()],
            f"{top}/txvnc/novnc/",
        )
        missing = [name for name in NOVNC_FILES if name not in in_sdist]
        assert not missing, f"the sdist lacks {missing}"
        assert not any("node_modules" in name for name in archive.getnames())
        archive.extractall(tmp_path / "unpacked", filter="data")
    unpacked = tmp_path / "unpacked" / top
    no_npm = clean_env(PATH=str(venv))
    run([venv / "pip", "wheel", "-q", "--no-deps", "-w", dist, unpacked], env=no_npm)
    assert not (unpacked / "node_modules").exists()
    (wheel,) = dist.glob("txvnc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = packaged(archive.namelist(), "txvnc/novnc/")
    assert files == in_sdist


def test_make_install_says_what_it_does(tmp_path: Path) -> None:
    """
    C{make install} in a clean copy prints one "==> " line a step and a
    last line saying what is ready, nothing else on stdout (pip stays
    quiet); run again, it has nothing to do but say so.
    """
    source = clean_copy(tmp_path / "clone")
    first = run(["make", "--no-print-directory", "install"], cwd=source, env=clean_env())
    lines = first.stdout.splitlines()
    assert lines and all(line.startswith("==> ") for line in lines), first.stdout
    assert lines[0].startswith("==> creating .venv")
    assert any("pip install ." in line for line in lines)
    assert lines[-1].startswith("==> installed: .venv/bin/twistd txvnc")
    again = run(["make", "--no-print-directory", "install"], cwd=source, env=clean_env())
    assert again.stdout.splitlines() == lines[-1:]
