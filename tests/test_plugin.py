"""
The twistd plugin as installed: C{twistd txvnc} must be found from any
directory, which only works when the package ships C{twisted/plugins/}
without an C{__init__.py} and is installed as files Twisted's plugin finder
can see.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TWISTD = Path(sys.executable).parent / "twistd"

#: Every option of C{twistd txvnc}, with the default its help must show
#: (L{None}: no default to show).
OPTIONS = {
    "--listen": "tcp:6080",
    "--api-listen": "tcp:6081:interface=127.0.0.1",
    "--api-key-file": "txvnc-api.key",
    "--store": "sqlite:txvnc.sqlite",
    "--consoleauth-url": "the embedded API",
    "--base-url": "http://<hostname>:<proxy port>",
    "--web": None,
    "--allowed-origin": None,
    "--no-api": None,
    "--no-proxy": None,
    "--allowed-target": None,
    "--max-token-ttl": "86400",
    "--max-auth-failures": "20",
    "--audit-log": None,
    "--node-name": "<hostname>:<proxy port>",
    "--revocation-poll-interval": "1.0",
}

pytestmark = pytest.mark.timeout(120)


def twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """
    Run the venv's twistd in C{cwd}, with nothing on C{PYTHONPATH}, so only
    the installed copy of txvnc can be found.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TXVNC_"))}
    return subprocess.run(
        [str(TWISTD), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def options_in_help(usage: str) -> dict[str, str]:
    """
    Each option of a twistd usage text with its help, unwrapped
    (C{"--store": "Token store: ... [default: sqlite:txvnc.sqlite]"}).
    """
    options: dict[str, str] = {}
    current = None
    for line in usage.splitlines():
        entry = re.match(r"^\s+(?:-\w, )?(--[\w-]+)=?\s*(.*)$", line)
        if entry:
            current = entry.group(1)
            options[current] = entry.group(2)
        elif current is not None and line.startswith(" " * 20) and line.strip():
            options[current] += " " + line.strip()
        else:
            current = None
    return options


def test_help_lists_every_option_with_its_default(tmp_path: Path) -> None:
    """
    C{twistd txvnc --help}, run outside the checkout, exits 0 and documents
    every option, showing the defaults of those that have one.
    """
    result = twistd("txvnc", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    options = options_in_help(result.stdout)
    for option, default in OPTIONS.items():
        assert options.get(option), f"{option} is not in the help:\n{result.stdout}"
        if default is not None:
            assert f"[default: {default}]" in options[option], (
                f"{option} does not show its default {default!r}: {options[option]!r}"
            )


def test_no_api_and_no_proxy_is_a_usage_error(tmp_path: Path) -> None:
    """
    C{twistd txvnc --no-api --no-proxy} refuses to start with a usage error
    saying there is nothing to run: one line on stderr (not twistd's help
    on stdout with the error at its end).
    """
    result = twistd("-n", "--pidfile=", "txvnc", "--no-api", "--no-proxy", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "twistd txvnc: --no-api and --no-proxy leave nothing to run\n"
    assert result.stdout == ""
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "txvnc-api.key").exists()


def test_plugin_directory_is_a_namespace_in_the_checkout() -> None:
    """
    The checkout's C{twisted/plugins/} has no C{__init__.py}, which would
    replace Twisted's own when installed.
    """
    assert (REPO / "twisted" / "plugins" / "txvnc_plugin.py").is_file()
    assert not (REPO / "twisted" / "plugins" / "__init__.py").exists()


def test_plugin_is_installed_beside_twisteds_own() -> None:
    """
    The installed site-packages has C{twisted/plugins/txvnc_plugin.py} and
    still Twisted's own C{twisted/plugins/__init__.py}.
    """
    plugins = Path(sysconfig.get_paths()["purelib"]) / "twisted" / "plugins"
    assert (plugins / "txvnc_plugin.py").is_file()
    assert "pluginPackagePaths" in (plugins / "__init__.py").read_text()
