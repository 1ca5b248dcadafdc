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


pytestmark = pytest.mark.usefixtures("in_tmp")


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


FILES = [("--api-key-file", "API key file"), ("--secret-key-file", "secret key file")]


@pytest.mark.parametrize("option, what", FILES)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_key_file_open_to_other_users_is_refused(in_tmp: Path, option: str, what: str, mode: int) -> None:
    """A key file that other users (its group included) can read or write stops start-up, naming the file and its mode and how to fix it, as ssh does."""
    path = key_file(in_tmp / "some.key", GOOD_KEY + "\n", mode)
    with pytest.raises(UsageError) as e:
        options(option, str(path))
    assert str(e.value) == f"{what} {path} is open to other users (mode {mode:04o}): run chmod 600 {path}"


def test_proxy_alone_refuses_an_open_key_file(in_tmp: Path) -> None:
    """A proxy without the API (--no-api) reads its proxy key under the same rule."""
    path = key_file(in_tmp / "api.key", f"proxy {GOOD_KEY}\n", 0o644)
    with pytest.raises(UsageError, match=r"is open to other users \(mode 0644\): run chmod 600"):
        options("--no-api", "--consoleauth-url", "http://127.0.0.1:6081", "--api-key-file", str(path))


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_key_files_are_used(in_tmp: Path, mode: int) -> None:
    """Key files only their owner can read start as before."""
    api = key_file(in_tmp / "api.key", GOOD_KEY + "\n", mode)
    secret = key_file(in_tmp / "secret.key", "s" * 43 + "\n", mode)
    options("--api-key-file", str(api), "--secret-key-file", str(secret))


@pytest.mark.parametrize("option, what", FILES)
@pytest.mark.parametrize("text", ["short\n", f"admin {GOOD_KEY}\nproxy fifteen-chars-x\n"])
def test_short_keys_are_refused(in_tmp: Path, option: str, what: str, text: str) -> None:
    """A key under 16 characters is too short to be secret: start-up stops, without quoting it."""
    path = key_file(in_tmp / "some.key", text)
    with pytest.raises(UsageError) as e:
        options(option, str(path))
    message = str(e.value)
    assert message.startswith(f"{what} {path} holds a key of ")
    assert "too short to be secret: use at least 16 characters" in message
    assert "short" not in message.split("holds")[1].replace("too short", "")
    assert "fifteen" not in message


def test_served_keys_are_not_reloaded_from_an_open_file(in_tmp: Path) -> None:
    """On SIGHUP the keys in force stay when the file has become readable by others."""
    from txvnc.consoleauth.keys import KeyRing

    path = key_file(in_tmp / "api.key", f"admin {GOOD_KEY}\n")
    ring = KeyRing.from_file(str(path), private=True)
    key_file(path, f"admin {'n' * 43}\n", 0o644)
    assert ring.reload() is False
    assert ring.key_for("admin") == GOOD_KEY
    path.chmod(0o600)
    assert ring.reload() is True
    assert ring.key_for("admin") == "n" * 43
