"""
Tokens never reach the access log.
"""

from twisted.web.test.requesthelper import DummyRequest

from txvnc.consoleauth.tokens import new_token, token_ref
from txvnc.redact import access_log_formatter, redact


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
