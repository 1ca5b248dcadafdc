"""
VNC passwords at rest: sealed with a key that lives in its own file, so a
copy of the token store (SQLite file, Redis dump, backup) holds no usable
password.

The key file is created on first start like the API key file (random, mode
0600, never overwritten); the Fernet key (AES-128-CBC with HMAC-SHA256) is
derived from its content.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

SEALED = "vnc_password_sealed"
PLAIN = "vnc_password"


class SecretError(Exception):
    """
    A sealed secret cannot be opened: the key file changed since it was
    sealed, or the stored value was tampered with.
    """


class SecretBox:
    """
    Seals and opens short secrets with a key read from a file.
    """

    def __init__(self, key: str) -> None:
        digest = hashlib.sha256(b"txvnc secret box\0" + key.encode("utf-8")).digest()
        self._key = key.encode("utf-8")
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as e:
            raise SecretError(
                "a stored VNC password cannot be decrypted (was --secret-key-file "
                "replaced?)"
            ) from e

    def derive(self, purpose: str) -> bytes:
        """
        A key for C{purpose} (e.g. signing replay links) from the same key
        file, unrelated to the sealing key and to any other purpose's.
        """
        return hashlib.sha256(
            b"txvnc derived key\0" + purpose.encode("utf-8") + b"\0" + self._key
        ).digest()

    def __repr__(self) -> str:
        return "<SecretBox>"


def seal_options(options: dict[str, Any], box: SecretBox | None) -> dict[str, Any]:
    """
    Token options as stored: the password replaced by its sealed form.

    @raise SecretError: a password is given and there is no key to seal it.
    """
    if PLAIN not in options:
        return options
    if box is None:
        raise SecretError("this token API has no secret key to store a VNC password")
    stored = {k: v for k, v in options.items() if k != PLAIN}
    stored[SEALED] = box.seal(options[PLAIN])
    return stored


def reveal_password(options: dict[str, Any], box: SecretBox | None) -> str | None:
    """
    The plain password of stored token options, or L{None} if they hold none.

    @raise SecretError: when it cannot be opened.
    """
    sealed = options.get(SEALED)
    if sealed is None:
        return None
    if box is None:
        raise SecretError("this token API has no secret key to open a VNC password")
    return box.open(sealed)
