"""
VNC Authentication (RFC 6143 section 7.2.2): the response to the server's
16-byte challenge is the challenge DES-encrypted with the password.

The RFB twist: the key is the password's first eight bytes (zero padded),
each byte with its bits in reverse order, a quirk of the original
implementation that every server reproduces.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

CHALLENGE_SIZE = 16
#: Only this many bytes of a VNC password count; servers ignore the rest.
PASSWORD_SIZE = 8


def _reverse_bits(byte: int) -> int:
    result = 0
    for _ in range(8):
        result = (result << 1) | (byte & 1)
        byte >>= 1
    return result


def vnc_key(password: bytes) -> bytes:
    """
    The DES key VNC derives from a password.
    """
    padded = password[:PASSWORD_SIZE].ljust(PASSWORD_SIZE, b"\0")
    return bytes(_reverse_bits(b) for b in padded)


def vnc_auth_response(password: bytes, challenge: bytes) -> bytes:
    """
    The 16 bytes that answer C{challenge} for C{password}.

    Triple DES with one key used three times (EDE) is single DES, the
    cipher RFB specifies.
    """
    if len(challenge) != CHALLENGE_SIZE:
        raise ValueError(f"a VNC challenge is {CHALLENGE_SIZE} bytes")
    encryptor = Cipher(TripleDES(vnc_key(password) * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()
