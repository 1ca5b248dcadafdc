"""
Where the proxy finds a console token.
"""

from urllib.parse import parse_qs, quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txvnc.proxy.tokens import MAX_TOKEN_LENGTH, extract_token

TOKEN = "1A4fjTfMhFzh1zm0GzThMB7l5t1SH0E9RTBlC1WjRtg"


def params(query):
    return parse_qs(query)


@pytest.mark.parametrize(
    "query, cookie",
    [
        (f"token={TOKEN}", None),
        ("path=" + quote(f"?token={TOKEN}", safe=""), None),
        ("path=" + quote(f"websockify?token={TOKEN}", safe=""), None),
        ("", f"token={TOKEN}"),
        ("", f"theme=dark; token={TOKEN}; lang=en"),
    ],
)
def test_each_form_is_found(query, cookie):
    """The token is found in ?token=, in noVNC's path parameter or a cookie."""
    assert extract_token(params(query), cookie) == TOKEN


@pytest.mark.parametrize(
    "cookie",
    [
        f'bad"cookie; token={TOKEN}',
        f"a b=1; token={TOKEN}",
        f'x="unterminated; token={TOKEN}',
        f"=; token={TOKEN}; theme=dark",
    ],
)
def test_malformed_cookie_before_the_token(cookie):
    """
    Cookies are read part by part, as nova reads them: another site's
    malformed cookie before the token cookie does not hide it.
    """
    assert extract_token(params(""), cookie) == TOKEN


def test_query_wins_over_path_and_cookie():
    """When several forms are present the query string's token is used."""
    query = f"token={TOKEN}&path=" + quote("?token=other", safe="")
    assert extract_token(params(query), "token=third") == TOKEN
    query = "path=" + quote("?token=second", safe="")
    assert extract_token(params(query), "token=third") == "second"


@pytest.mark.parametrize(
    "query, cookie",
    [
        ("", None),
        ("token=", None),
        ("token=%20%20", None),
        ("path=websockify", None),
        ("path=" + quote("?other=1", safe=""), None),
        ("", "other=1"),
        ("", "token"),
        ("", '"; token=\x00'),
        ("token=" + "a" * (MAX_TOKEN_LENGTH + 1), None),
    ],
)
def test_no_token(query, cookie):
    """Requests without a usable token give None."""
    assert extract_token(params(query), cookie) is None


token_text = st.text(
    alphabet=st.characters(
        min_codepoint=33, max_codepoint=126, exclude_characters='%+&#;,"\\='
    ),
    min_size=1,
    max_size=MAX_TOKEN_LENGTH,
)


@given(token_text)
def test_query_and_path_round_trip(token):
    """Any printable token survives being put in the query or in path=."""
    assert extract_token(params(urlencode({"token": token})), None) == token
    path = "websockify?" + urlencode({"token": token})
    assert extract_token(params(urlencode({"path": path})), None) == token


@given(st.dictionaries(st.text(), st.lists(st.text(), max_size=3)), st.text())
def test_never_raises(query, cookie):
    """Arbitrary parameters and cookie headers never raise."""
    token = extract_token(query, cookie)
    assert token is None or 0 < len(token) <= MAX_TOKEN_LENGTH
