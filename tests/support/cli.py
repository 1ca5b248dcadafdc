"""
The C{txvnc} command of the venv running the tests, as an operator runs it:
L{run_cli} for any arguments, L{Console} for what C{console create} prints.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import clean_env

TXVNC = Path(sys.executable).parent / "txvnc"

CLI_TIMEOUT = 60.0


@dataclass
class Console:
    """
    One minted console: its access URL and the token inside it.
    """

    url: str
    token: str

    @classmethod
    def created(cls, result: subprocess.CompletedProcess[str]) -> Console:
        """
        The console C{txvnc console create} printed, which must have
        succeeded.
        """
        assert result.returncode == 0, f"console create failed: {result.stderr}"
        found = re.search(r"^\| novnc +\| (\S+) +\|$", result.stdout, re.MULTILINE)
        assert found, f"no novnc URL in:\n{result.stdout}"
        url = found.group(1)
        token = re.fullmatch(r".*/vnc_auto\.html\?token=([A-Za-z0-9_-]+)", url)
        assert token, f"no token in the access URL {url}"
        return cls(url, token.group(1))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """
    Run C{txvnc ARGS} in C{cwd}, with our environment minus txvnc's own
    variables; its output and exit status.
    """
    return subprocess.run(
        [str(TXVNC), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=CLI_TIMEOUT,
    )
