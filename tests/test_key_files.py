"""
The key files twistd txvnc starts with: the API key file and the secret key
file that seals VNC passwords. Each is named as what it is in every message,
refused when other users can read it, and refused when its key is too short
to be a secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.usage import UsageError

from txvnc.tap import Options, makeService

GOOD_KEY = "k" * 43


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    novnc = tmp_path / "novnc" / "core"
    novnc.mkdir(parents=True)
    (novnc / "rfb.js").write_text("export default class RFB {}")
    monkeypatch.setenv("TXVNC_NOVNC_DIR", str(tmp_path / "novnc"))
    return tmp_path


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def options(*argv: str) -> Options:
    config = Options()
    config.parseOptions(["--store", "memory:", "--listen", "tcp:0", "--api-listen", "tcp:0", *argv])
    return config


def key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secret_key_file_errors_name_the_secret_key_file(in_tmp: Path) -> None:
    """An unusable --secret-key-file is called the secret key file, not the API key file."""
    empty = key_file(in_tmp / "secret.key", "\n")
    with pytest.raises(UsageError) as e:
        options("--secret-key-file", str(empty))
    assert str(e.value) == f"secret key file {empty} is empty"


def test_created_files_are_named_for_what_they_are(in_tmp: Path, log_lines: list[str]) -> None:
    """The start-up lines name the API key file and the secret key file each for what it is."""
    makeService(options(), MemoryReactorClock())
    created = [line for line in log_lines if line.startswith("created ")]
    assert created == [
        f"created API key file {in_tmp / 'txvnc-api.key'} (mode 0600)",
        f"created secret key file {in_tmp / 'txvnc-secret.key'} (mode 0600)",
    ]
