"""
The make targets and C{scripts/system-deps} say what they install, one
"==> " line a step, and keep pip, npm and apt quiet unless they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Commands that take long and print a lot when not told otherwise.
LOUD = re.compile(r"(^|[\s/@])(pip install|npm ci|pytest|python[\d.]* -m venv|\$\(PYTHON\) -m venv|\$\(PIP\))")


def recipes(makefile: str) -> dict[str, list[str]]:
    """Each rule's target line with its recipe lines."""
    rules: dict[str, list[str]] = {}
    current = None
    for line in makefile.splitlines():
        if line.startswith("\t") and current is not None:
            rules[current].append(line[1:])
        elif re.match(r"^[^\s#].*:(?!=)", line):
            current = line.split(":")[0]
            rules[current] = []
        elif not line.startswith("\t"):
            current = None if line.strip() and not line.startswith("#") else current
    return rules


def test_every_install_step_is_announced_and_quiet() -> None:
    """Each recipe that installs or runs something long says so first in an "==> " line, and does not echo the command itself."""
    rules = recipes((REPO / "Makefile").read_text())
    checked = 0
    for target, lines in rules.items():
        for number, line in enumerate(lines):
            if not LOUD.search(line):
                continue
            checked += 1
            assert line.startswith("@"), f"{target}: {line!r} is echoed by make"
            before = lines[:number]
            assert any(b.startswith('@echo "==> ') for b in before), (
                f"{target}: nothing announces {line!r}"
            )
            if "pip install" in line or "$(PIP)" in line:
                assert " -q" in line or "$(PIP)" in line, line
            if "npm ci" in line:
                assert "--loglevel=error" in line, line
    assert checked >= 8


def test_targets_end_with_a_line_saying_how_it_went() -> None:
    """install, test and lint end with an "==> " line of their own."""
    rules = recipes((REPO / "Makefile").read_text())
    assert rules["install"][-1].startswith('@echo "==> installed:')
    assert "==> make test: every test passed" in "\n".join(rules["test"])
    assert "==> make test: FAILED" in "\n".join(rules["test"])
    assert rules["lint"][-1] == '@echo "==> make lint: clean"'


def fake_system(tmp_path: Path, apt_status: int) -> tuple[dict[str, str], Path]:
    """
    A PATH with bash and the few tools system-deps uses, none of the
    programs it looks for, and an apt-get that records its arguments,
    prints noise and exits with C{apt_status}.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "mktemp", "rm", "cat", "env"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    calls = tmp_path / "apt-calls"
    apt = bin_dir / "apt-get"
    apt.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{calls}"\n'
        "echo 'Selecting previously unselected package noise.'\n"
        "echo 'dpkg: warning: noise' >&2\n"
        f"exit {apt_status}\n"
    )
    apt.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return env, calls


@pytest.mark.skipif(os.geteuid() != 0, reason="system-deps uses sudo when not root")
def test_system_deps_says_what_it_installs_in_one_line(tmp_path: Path) -> None:
    """With programs missing, system-deps prints one line naming the Debian packages, and none of apt's output."""
    env, calls = fake_system(tmp_path, 0)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "system-deps"), "test"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    assert line.startswith("==> installing Debian packages: npm qemu-system-x86 chromium ")
    for package in ("tigervnc-standalone-server", "x11vnc", "libnss3-tools", "redis-server"):
        assert package in line
    update, install = calls.read_text().splitlines()
    assert update == "update -qq"
    assert install.startswith("install -y -qq npm qemu-system-x86")


@pytest.mark.skipif(os.geteuid() != 0, reason="system-deps uses sudo when not root")
def test_system_deps_shows_apt_when_it_fails(tmp_path: Path) -> None:
    """When apt-get fails, its output is shown (on stderr) with a last line saying so, and the exit status is 1."""
    env, _ = fake_system(tmp_path, 100)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "system-deps"), "npm"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "dpkg: warning: noise" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "==> installing Debian packages failed (apt-get's output above)"
    )


def test_the_readme_names_every_package_make_test_installs() -> None:
    """README's `make test` row lists every Debian package scripts/system-deps installs for the tests."""
    script = (REPO / "scripts" / "system-deps").read_text()
    packages = set(re.findall(r"want\+=\(([\w.-]+)\)", script))
    assert {"npm", "haproxy", "libnss3-tools", "redis-server"} <= packages
    row = next(
        line for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("| `make test` |")
    )
    missing = [p for p in sorted(packages - {"npm"}) if f"`{p}`" not in row]
    assert missing == []
