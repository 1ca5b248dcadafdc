"""
The API key file and the bearer check.
"""

import os
import stat

import pytest

from txvnc.consoleauth.keys import (
    KeyFileError,
    bearer_matches,
    load_or_create_key_file,
    read_key_file,
)


def test_missing_key_file_is_created_private(tmp_path):
    """A first start creates the key file with mode 0600 and a long key."""
    path = tmp_path / "api.key"
    key = load_or_create_key_file(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(key) >= 32
    assert read_key_file(str(path)) == key
    assert load_or_create_key_file(str(path)) == key


def test_existing_key_file_is_read(tmp_path):
    """An operator's own key is used as written, white space stripped."""
    path = tmp_path / "api.key"
    path.write_text("  operator-key\n")
    assert load_or_create_key_file(str(path)) == "operator-key"


def test_empty_or_missing_key_file_is_an_error(tmp_path):
    """An empty or absent key file is reported, not treated as a key."""
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    with pytest.raises(KeyFileError, match="is empty"):
        read_key_file(str(empty))
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(str(tmp_path / "nope.key"))


def test_key_file_in_missing_directory_is_an_error(tmp_path):
    """A key file that cannot be created says so."""
    with pytest.raises(KeyFileError, match="cannot create"):
        load_or_create_key_file(str(tmp_path / "no" / "such" / "dir.key"))


@pytest.mark.parametrize(
    "header, ok",
    [
        (b"Bearer k3y", True),
        (b"bearer k3y", True),
        (b"Bearer k3y ", True),
        (b"Bearer k3", False),
        (b"Bearer k3yy", False),
        (b"Basic k3y", False),
        (b"k3y", False),
        (b"", False),
        (None, False),
    ],
)
def test_bearer_matches(header, ok):
    """Only the exact key under the Bearer scheme is accepted."""
    assert bearer_matches(header, "k3y") is ok
