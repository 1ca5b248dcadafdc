"""
VNC Authentication's DES response.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from txvnc.rfb.vncauth import vnc_auth_response, vnc_key


def test_key_reverses_the_bits_of_each_byte() -> None:
    """Each password byte becomes a key byte with its bits mirrored."""
    assert vnc_key(b"\x01\x02\x80\xf0") == b"\x80\x40\x01\x0f\0\0\0\0"


def test_key_uses_only_the_first_eight_bytes() -> None:
    """Characters past the eighth do not change the key, as in every server."""
    assert vnc_key(b"abcdefghXYZ") == vnc_key(b"abcdefgh")


def test_response_decrypts_back_to_the_challenge() -> None:
    """The response is the challenge encrypted under the mirrored key."""
    challenge = bytes(range(16))
    response = vnc_auth_response(b"secret", challenge)
    key = vnc_key(b"secret") * 3
    decryptor = Cipher(TripleDES(key), modes.ECB()).decryptor()
    assert decryptor.update(response) + decryptor.finalize() == challenge
    assert response != challenge


def test_known_answer() -> None:
    """A fixed password and challenge give a fixed answer (a regression pin)."""
    assert (
        vnc_auth_response(b"password", bytes(range(16))).hex()
        == "b866924125c8eebb9debc1db61c538e2"
    )


def test_challenge_must_be_sixteen_bytes() -> None:
    """A short challenge is an error, not a short answer."""
    with pytest.raises(ValueError):
        vnc_auth_response(b"pw", b"short")
