"""
Tokens never reach the access log.
"""

import pytest
from twisted.internet.address import IPv4Address
from twisted.web.test.requesthelper import DummyRequest

from txvnc.consoleauth.tokens import new_token
from txvnc.core.accesslog import access_log_formatter, access_log_formatter_for, redact
from txvnc.core.forwarded import parse_networks
from txvnc.core.tokens import token_ref


def test_each_token_form_is_redacted():
    """Query, noVNC path parameter and API path tokens become their hash."""
    token = new_token()
    ref = "~" + token_ref(token)
    cases = {
        f"GET /vnc_auto.html?token={token} HTTP/1.1": f"?token={ref} ",
        f"GET /vnc_lite.html?path=websockify%3Ftoken%3D{token} HTTP/1.1": f"%3D{ref} ",
        f"GET /x?a=1&TOKEN={token}&b=2": f"TOKEN={ref}&b=2",
        f"DELETE /v1/tokens/{token} HTTP/1.1": f"/v1/tokens/{ref} ",
        f'"http://proxy:6080/vnc_auto.html?token={token}"': f'token={ref}"',
    }
    for line, expected in cases.items():
        redacted = redact(line)
        assert token not in redacted
        assert expected in redacted


def test_a_replay_link_token_is_redacted():
    """
    A replay link's token (what the proxy asks the API about, GET
    /v1/replays/T, and what the page sends, /replay-data?token=T) opens a
    recording until it expires: it is a secret like a console's token.
    """
    replay = "eyJyIjoiMjAyNjEyMDZUMTUyMzI1Wi1wcm94eSIsImUiOjE3OTY1NzEyMDV9.sf2dgrX7KwsDVn0JAIT617iV859xCDjc"
    ref = "~" + token_ref(replay)
    for line, expected in {
        f"GET /v1/replays/{replay} HTTP/1.1": f"/v1/replays/{ref} ",
        f"GET /v1/%72eplays/{replay} HTTP/1.1": f"/v1/%72eplays/{ref} ",
        f"GET /replay-data?token={replay} HTTP/1.1": f"?token={ref} ",
    }.items():
        redacted = redact(line)
        assert replay not in redacted
        assert expected in redacted


def test_other_text_is_untouched():
    """Lines without tokens pass through unchanged."""
    line = 'GET /novnc/core/rfb.js HTTP/1.1" 200 1234 "-" "Chromium"'
    assert redact(line) == line


def test_access_log_line_has_no_token():
    """The formatter the sites use writes the request without its token."""
    token = new_token()
    request = DummyRequest([b""])
    request.code = 200
    request.sentLength = 10
    request.clientproto = b"HTTP/1.1"
    request.uri = f"/vnc_auto.html?token={token}".encode()
    request.requestHeaders.addRawHeader(
        b"referer", f"http://p/vnc_auto.html?token={token}".encode()
    )
    line = access_log_formatter("[23/Nov/2026:19:00:00 +0000]", request)
    assert token not in line
    assert line.count("~" + token_ref(token)) == 2


@pytest.mark.parametrize(
    ("peer", "forwarded", "logged"),
    [
        # A trusted load balancer: the first hop it did not add.
        (IPv4Address("TCP", "10.0.0.2", 4000), "203.0.113.7", "203.0.113.7"),
        (IPv4Address("TCP", "10.0.0.2", 4000), "198.51.100.9, 203.0.113.7", "203.0.113.7"),
        (IPv4Address("TCP", "10.0.0.2", 4000), "2001:db8::7", "2001:db8::7"),
        (IPv4Address("TCP", "10.0.0.2", 4000), "not-an-address", "10.0.0.2"),
        (IPv4Address("TCP", "10.0.0.2", 4000), None, "10.0.0.2"),
        # Anyone else's X-Forwarded-For is not believed.
        (IPv4Address("TCP", "198.51.100.2", 4000), "203.0.113.7", "198.51.100.2"),
    ],
)  # fmt: skip
def test_access_log_names_the_client_a_trusted_proxy_forwarded(peer, forwarded, logged):
    """Behind a --trusted-proxy the access log names the forwarded client, as the proxy's own lines do; other peers are logged as they are."""
    request = DummyRequest([b""])
    request.code = 200
    request.sentLength = 10
    request.clientproto = b"HTTP/1.1"
    request.uri = b"/vnc_auto.html"
    request.client = peer
    if forwarded is not None:
        request.requestHeaders.setRawHeaders(b"x-forwarded-for", [forwarded.encode()])
    formatter = access_log_formatter_for(parse_networks(["10.0.0.0/8"]))
    line = formatter("[24/Nov/2026:05:00:00 +0000]", request)
    assert line.startswith(f'"{logged}" - - ')
    assert access_log_formatter_for(())("t", request).startswith(f'"{peer.host}" ')
