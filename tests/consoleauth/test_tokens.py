"""
Token minting and the token request schema.
"""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txvnc.consoleauth.tokens import InvalidRequest, new_token, parse_token_request
from txvnc.core.tokens import iso8601, token_hash, token_ref


def test_token_is_long_random_and_url_safe():
    """A token carries at least 128 random bits in URL-safe characters."""
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128
        assert set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_token_never_reads_as_a_command_line_option():
    """No token starts with "-" (one in 64 of plain URL-safe base64 would, and argparse would take it for an option)."""
    assert not any(new_token().startswith("-") for _ in range(2000))


def test_hash_and_ref_do_not_contain_token():
    """Stores and logs see a SHA-256 and its prefix, never the token."""
    token = new_token()
    assert len(token_hash(token)) == 64
    assert token not in token_hash(token)
    assert token_hash(token).startswith(token_ref(token))
    assert len(token_ref(token)) == 12


def test_iso8601_is_utc_with_z():
    """Expiry times are ISO 8601 in UTC."""
    assert iso8601(0) == "1970-01-01T00:00:00Z"


def test_defaults():
    """console_type defaults to novnc and ttl to 600 seconds."""
    request = parse_token_request({"host": "10.0.0.6", "port": 5900})
    assert request.console_type == "novnc"
    assert request.ttl == 600
    assert request.instance_uuid is None
    record = request.to_record("secret", now=100.0)
    assert record.expires_at == 700.0
    assert record.token_hash == token_hash("secret")


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "must be a JSON object"),
        ({"port": 5900}, "missing host"),
        ({"host": "", "port": 5900}, "host must be a non-empty string"),
        ({"host": 7, "port": 5900}, "host must be a non-empty string"),
        ({"host": "a/b", "port": 5900}, "host must be a host name"),
        ({"host": "h"}, "missing port"),
        ({"host": "h", "port": 0}, "port must be an integer from 1 to 65535"),
        ({"host": "h", "port": 65536}, "port must be an integer from 1 to 65535"),
        ({"host": "h", "port": "5900"}, "port must be an integer"),
        ({"host": "h", "port": True}, "port must be an integer"),
        ({"host": "h", "port": 5900, "ttl": 0}, "ttl must be a positive integer"),
        ({"host": "h", "port": 5900, "ttl": -5}, "ttl must be a positive integer"),
        ({"host": "h", "port": 5900, "ttl": 1.5}, "ttl must be a positive integer"),
        ({"host": "h", "port": 5900, "ttl": 86401}, "ttl must be at most 86400"),
        ({"host": "h", "port": 5900, "ttl": 10**400}, "ttl must be at most 86400"),
        ({"host": " h", "port": 5900}, "host must be a host name"),
        ({"host": "h", "port": 5900, "console_type": "spice"}, "console_type"),
        ({"host": "h", "port": 5900, "instance_uuid": ""}, "instance_uuid"),
        ({"host": "h", "port": 5900, "instance_uuid": "a/b"}, "instance_uuid"),
        ({"host": "h", "port": 5900, "colour": "red"}, "unknown field: colour"),
    ],
)
def test_invalid_requests_say_what_is_wrong(body, message):
    """Each malformed request is refused with a message naming the problem."""
    with pytest.raises(InvalidRequest, match=message):
        parse_token_request(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["host", "port", "ttl", "instance_uuid", "console_type", "x"]),
        json_values,
    )
)
def test_any_json_is_accepted_or_refused_cleanly(body):
    """Whatever JSON arrives, validation returns a request or InvalidRequest."""
    try:
        request = parse_token_request(body)
    except InvalidRequest as e:
        assert str(e)
    else:
        assert 1 <= request.port <= 65535
        assert request.ttl > 0
