"""
Reading PEM files: the CA certificate a server must chain to (the token
API's https, a rediss:// store, VeNCrypt VNC servers and the options check
all read theirs here) and the certificate blocks of a chain file.
"""

from __future__ import annotations

import re

from twisted.internet.ssl import Certificate


def load_ca(path: str | None) -> Certificate | None:
    """
    The PEM CA certificate at C{path} that a server's certificate must chain
    to, or None (the system's CAs) without one.

    @raise OSError: the file cannot be read.
    @raise Exception: it is not a PEM certificate (OpenSSL's error).
    """
    if path is None:
        return None
    with open(path, "rb") as f:
        return Certificate.loadPEM(f.read())


def pem_blocks(data: bytes) -> list[bytes]:
    return re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S
    )
