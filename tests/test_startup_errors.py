"""
A new user's typos end in one line, not a traceback: real C{twistd txvnc}
and C{txvnc} processes (the installed copy) given a bad listener, a port in
use, C{systemd:} outside systemd or a URL that is not one exit non-zero with
one line on stderr naming the option and the value.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import clean_env

BIN = Path(sys.executable).parent
TWISTD = BIN / "twistd"
TXVNC = BIN / "txvnc"

pytestmark = pytest.mark.timeout(120)


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(**env),
        timeout=60,
    )


def twistd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """
    C{twistd -n txvnc} with a memory store and an empty page directory, so
    only C{args} can be wrong.
    """
    (tmp_path / "web").mkdir(exist_ok=True)
    return run(
        [
            str(TWISTD), "-n", "--pidfile=", "txvnc",
            "--store", "memory:",
            "--web", str(tmp_path / "web"),
            "--api-listen", "tcp:0:interface=127.0.0.1",
            *args,
        ],
        tmp_path,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """
    The one line a failed start wrote on stderr; no traceback anywhere.
    """
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """
    A loopback port something else listens on.
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--listen", "foo:bar", "--base-url", "http://console.example"],
            (
                "twistd txvnc: --listen foo:bar: unknown endpoint type 'foo' "
                "(use tcp:, tcp6:, ssl:, unix: or systemd:)"
            ),
        ),
        (
            ["--listen", "tcp:99999"],
            "twistd txvnc: --listen tcp:99999: port 99999 is out of range (0-65535)",
        ),
        (
            ["--listen", "tcp:6080:interface=999.1.1.1"],
            (
                "twistd txvnc: --listen tcp:6080:interface=999.1.1.1: "
                "interface 999.1.1.1 is not an IP address"
            ),
        ),
        (
            ["--listen", "tcp:6080:interfac=127.0.0.1"],
            (
                "twistd txvnc: --listen tcp:6080:interfac=127.0.0.1: "
                "unknown parameter 'interfac' (tcp: takes port, interface, backlog)"
            ),
        ),
        (
            ["--api-listen", "tcp:http"],
            "twistd txvnc: --api-listen tcp:http: port 'http' is not a number",
        ),
        (
            ["--metrics-listen", "unix:/no/such/dir/m.sock"],
            (
                "twistd txvnc: --metrics-listen unix:/no/such/dir/m.sock: "
                "directory /no/such/dir does not exist"
            ),
        ),
        (
            ["--listen", "systemd:domain=INET:index=0", "--base-url", "http://console.example"],
            (
                "twistd txvnc: --listen systemd:domain=INET:index=0: systemd passed no "
                "socket 0 (LISTEN_FDS is not set for this process: start txvnc from a "
                "systemd socket unit)"
            ),
        ),
    ],
)
def test_bad_listener_is_one_line(tmp_path: Path, args: list[str], line: str) -> None:
    """Each unusable listener description stops twistd txvnc with one line naming the option and value, before anything starts."""
    result = twistd(tmp_path, *args)
    assert one_line(result) == line
    assert result.returncode == 1
    # Checked before anything started: no key file was made.
    assert not (tmp_path / "txvnc-api.key").exists()


def test_port_in_use_is_one_line(tmp_path: Path, taken_port: int) -> None:
    """A --listen port someone else holds stops twistd txvnc with one line, not forty lines ending in CannotListenError."""
    listen = f"tcp:{taken_port}:interface=127.0.0.1"
    result = twistd(tmp_path, "--listen", listen)
    assert one_line(result) == (
        f"twistd txvnc: --listen {listen}: cannot listen: Address already in use"
    )
    # The log says it too, for whoever reads the log rather than the terminal.
    assert f"--listen {listen}: cannot listen: Address already in use" in result.stdout


def test_worker_port_in_use_is_one_line(tmp_path: Path, taken_port: int) -> None:
    """With --workers the shared sockets are made at once; a port in use is the same one line."""
    listen = f"tcp:{taken_port}:interface=127.0.0.1"
    result = twistd(tmp_path, "--listen", listen, "--workers", "2")
    assert one_line(result) == (
        f"twistd txvnc: --listen {listen}: cannot listen: Address already in use"
    )


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    """An option twistd txvnc refuses is one line on stderr, not the whole help on stdout."""
    result = twistd(tmp_path, "--workers", "0")
    assert one_line(result) == "twistd txvnc: --workers must be at least 1"
    assert result.returncode == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    "url, why",
    [
        ("not-a-url", "not an http:// or https:// URL"),
        ("ftp://127.0.0.1:6081", "not an http:// or https:// URL"),
        ("http://", "no host"),
        ("http://127.0.0.1:99999", "port out of range 0-65535"),
    ],
)
def test_cli_bad_api_url_is_one_line(tmp_path: Path, url: str, why: str) -> None:
    """txvnc --api-url with something that is not an http(s) URL says so in one line and exits 2."""
    result = run([str(TXVNC), "--api-url", url, "console", "list"], tmp_path, TXVNC_API_KEY="k" * 43)
    assert one_line(result) == f"txvnc: --api-url {url}: {why}"
    assert result.returncode == 2


def test_bad_consoleauth_url_is_one_line(tmp_path: Path) -> None:
    """A proxy told to check tokens at something that is not a URL refuses to start, in one line."""
    key = tmp_path / "api.key"
    key.write_text(f"proxy {'p' * 43}\n")
    key.chmod(0o600)
    result = twistd(
        tmp_path, "--no-api", "--consoleauth-url", "consoleauth:6081", "--api-key-file", str(key)
    )
    assert one_line(result) == (
        "twistd txvnc: --consoleauth-url consoleauth:6081: not an http:// or https:// URL"
    )
