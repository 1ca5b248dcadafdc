"""
The RFB options of C{txvnc console create}: argument rules, and the password
read from a file or the environment, never from the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from txvnc import cli


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TXVNC_API_KEY", "k")
    monkeypatch.delenv("TXVNC_VNC_PASSWORD", raising=False)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--host", "h"], "--host needs --port"),
        (["--unix-path", "/run/vnc/a.sock", "--port", "5900"], "--unix-path takes no --port"),
        (["--host", "h", "--unix-path", "/x"], "not allowed with argument"),
        (["--host", "h", "--port", "1", "--shared", "--exclusive"], "not allowed with argument"),
        (["--host", "h", "--port", "1", "--clipboard", "sideways"], "invalid choice"),
        (["--host", "h", "--port", "1", "--vnc-password", "pw"], "unrecognized arguments"),
    ],
)
def test_argument_rules(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Conflicting or unknown create arguments are usage errors (exit 2); there is no password option."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["console", "create", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_password_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable --vnc-password-file is exit 2 with the file named."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["console", "create", "--host", "h", "--port", "1", "--vnc-password-file", str(tmp_path / "none")])
    assert exited.value.code == 2
    assert "cannot read VNC password file" in capsys.readouterr().err


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The password comes from the file (newline stripped), else TXVNC_VNC_PASSWORD, else nothing."""
    parser = cli._parser()
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    args = parser.parse_args(["console", "create", "--host", "h", "--port", "1", "--vnc-password-file", str(secret)])
    assert cli._vnc_password(args) == "s3cret"
    args = parser.parse_args(["console", "create", "--host", "h", "--port", "1"])
    assert cli._vnc_password(args) is None
    monkeypatch.setenv("TXVNC_VNC_PASSWORD", "fromenv")
    assert cli._vnc_password(args) == "fromenv"


def test_options_default_to_absent() -> None:
    """Without RFB flags nothing is sent, so the token relays untouched."""
    args = cli._parser().parse_args(["console", "create", "--host", "h", "--port", "1"])
    assert (args.security, args.view_only, args.clipboard, args.shared) == (None, None, None, None)
    args = cli._parser().parse_args(["console", "create", "--unix-path", "/run/vnc/a", "--view-only", "--exclusive"])
    assert (args.view_only, args.shared, args.unix_path) == (True, False, "/run/vnc/a")
