"""
Numbers in C{--config}: a TOML value is read as the command line would read
it, so C{workers = 2.5} is refused instead of silently becoming 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from txvnc.tap import Options

pytestmark = pytest.mark.usefixtures("in_tmp")


def parse(tmp_path: Path, text: str) -> Options:
    path = tmp_path / "txvnc.toml"
    path.write_text('store = "memory:"\n' + text)
    config = Options()
    config.parseOptions(["--config", str(path)])
    return config


@pytest.mark.parametrize(
    "text, message",
    [
        ("workers = 2.5\n", "workers: 2.5 is not a whole number"),
        ("workers = 2.0\n", "workers: 2.0 is not a whole number"),
        ("max-auth-failures = 1e3\n", "max-auth-failures: 1000.0 is not a whole number"),
        ('workers = "2.5"\n', "workers: '2.5' is not a whole number"),
    ],
)
def test_fractions_for_whole_numbers_are_refused(tmp_path: Path, text: str, message: str) -> None:
    """A fraction (or any float) where a whole number is wanted is a usage error naming the key, as on the command line."""
    with pytest.raises(UsageError, match=message):
        parse(tmp_path, text)


def test_numbers_are_read_as_on_the_command_line(tmp_path: Path) -> None:
    """Whole numbers stay whole, and whole numbers where a fraction may go become floats."""
    config = parse(tmp_path, 'workers = 2\nidle-timeout = 60\nconnect-timeout = 2.5\nmax-auth-failures = "7"\n')
    assert (config["workers"], config["idle-timeout"], config["connect-timeout"]) == (2, 60.0, 2.5)
    assert config["max-auth-failures"] == 7
    assert type(config["workers"]) is int and type(config["idle-timeout"]) is float
