"""
The API key: one shared secret that both the control plane and the proxy
present as C{Authorization: Bearer KEY}.
"""

from __future__ import annotations

import hmac
import os
import secrets

from twisted.logger import Logger

_log = Logger()

KEY_BYTES = 32


class KeyFileError(Exception):
    """
    The key file exists but cannot be used; the message says why.
    """


def read_key_file(path: str) -> str:
    """
    The key in C{path}, stripped of surrounding white space.

    @raise KeyFileError: when the file is missing, unreadable or empty.
    """
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except FileNotFoundError:
        raise KeyFileError(f"API key file {path} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"cannot read API key file {path}: {e.strerror}") from None
    if not key:
        raise KeyFileError(f"API key file {path} is empty")
    return key


def load_or_create_key_file(path: str) -> str:
    """
    Read the key from C{path}, creating the file with a fresh random key and
    mode 0600 when it does not exist, so a first start needs no set-up and
    the key never has to pass through a command line or an environment.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key_file(path)
    except OSError as e:
        raise KeyFileError(f"cannot create API key file {path}: {e.strerror}") from None
    key = secrets.token_urlsafe(KEY_BYTES)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    _log.info("created API key file {path} (mode 0600)", path=os.path.abspath(path))
    return key


def bearer_matches(authorization: bytes | None, key: str) -> bool:
    """
    Whether an C{Authorization} header carries C{key}, compared in constant
    time so the answer's timing leaks nothing about the key.
    """
    if not authorization:
        return False
    scheme, _, presented = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(presented.strip(), key.encode("utf-8"))
