"""
The Origin policy that stops cross-site WebSocket hijacking.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txvnc.proxy.origin import origin_allowed


@pytest.mark.parametrize(
    "origin, host",
    [
        ("http://proxy.example:6080", "proxy.example:6080"),
        ("https://proxy.example", "proxy.example"),
        ("https://proxy.example:443", "proxy.example"),
        ("http://PROXY.example:6080", "proxy.EXAMPLE:6080"),
        ("http://[::1]:6080", "[::1]:6080"),
        ("http://127.0.0.1:6080", "127.0.0.1:6080"),
    ],
)
def test_same_host_is_allowed(origin, host):
    """A page served by the proxy itself may open consoles."""
    assert origin_allowed(origin, host)


@pytest.mark.parametrize(
    "origin, host",
    [
        ("http://evil.example", "proxy.example:6080"),
        ("http://proxy.example:6081", "proxy.example:6080"),
        ("http://proxy.example.evil.example:6080", "proxy.example:6080"),
        ("https://proxy.example", "proxy.example:80"),
        ("null", "proxy.example"),
        ("", "proxy.example"),
        ("file://", "proxy.example"),
        ("http://proxy.example:6080/path", "proxy.example:6080"),
        ("http://proxy.example:99999", "proxy.example:6080"),
        ("javascript:alert(1)", "proxy.example"),
    ],
)
def test_other_or_malformed_origins_are_refused(origin, host):
    """Another site, another port, or a malformed origin is refused."""
    assert not origin_allowed(origin, host)


def test_no_origin_is_not_a_browser():
    """Without an Origin header there are no ambient credentials to abuse."""
    assert origin_allowed(None, "proxy.example")


def test_allowed_list():
    """Listed full origins match exactly; listed host names match any port."""
    allowed = ["https://horizon.example", "dash.example"]
    assert origin_allowed("https://horizon.example", "proxy:6080", allowed)
    assert origin_allowed("https://horizon.example:443", "proxy:6080", allowed)
    assert not origin_allowed("http://horizon.example", "proxy:6080", allowed)
    assert not origin_allowed("https://horizon.example:8443", "proxy:6080", allowed)
    assert origin_allowed("http://dash.example:8080", "proxy:6080", allowed)
    assert not origin_allowed("http://sub.dash.example", "proxy:6080", allowed)
    assert origin_allowed("http://anything.example", "proxy:6080", ["*"])


def test_missing_host_header_only_allows_listed():
    """Without a Host header only listed origins pass."""
    assert not origin_allowed("http://a.example", None)
    assert origin_allowed("http://a.example", None, ["a.example"])


hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){1,2}", fullmatch=True)
ports = st.integers(1, 65535)


@given(hosts, ports, hosts, ports)
def test_origin_matches_host_iff_same_host_and_port(h1, p1, h2, p2):
    """Same host and port is allowed; any difference is refused."""
    allowed = origin_allowed(f"http://{h1}:{p1}", f"{h2}:{p2}")
    assert allowed == ((h1, p1) == (h2, p2))


@given(st.text(), st.one_of(st.none(), st.text()), st.lists(st.text(), max_size=3))
def test_never_raises(origin, host, allowed):
    """Any header values give an answer, never an exception."""
    assert origin_allowed(origin, host, allowed) in (True, False)
