"""
The target policy: which VNC servers a token may name.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txvnc.core.targets import PolicyError, TargetPolicy, parse_rule


def test_default_policy_is_loopback_and_private_vnc_ports():
    """Without rules, loopback and private ranges on 5900-6999 are allowed, nothing else."""
    policy = TargetPolicy.parse([])
    for host, port in [
        ("127.0.0.1", 5900),
        ("10.1.2.3", 6999),
        ("172.31.0.1", 5901),
        ("192.168.1.1", 5999),
        ("::1", 5900),
        ("fd00::5", 5900),
        ("localhost", 5900),
        ("::ffff:10.0.0.1", 5900),
    ]:
        assert policy.allows(host, port), (host, port)
    for host, port in [
        ("127.0.0.1", 22),
        ("10.1.2.3", 7000),
        ("172.32.0.1", 5900),
        ("8.8.8.8", 5900),
        ("169.254.169.254", 5900),
        ("vnc.example", 5900),
        ("2001:db8::1", 5900),
    ]:
        assert not policy.allows(host, port), (host, port)


def test_rules_with_networks_hosts_and_ranges():
    """CIDR, single address, host name and IPv6 rules match what they name."""
    policy = TargetPolicy.parse(
        [
            "10.0.0.0/8:5900-6999",
            "192.0.2.7:5901",
            "VNC.Example:5900-5910",
            "[2001:db8::/32]:5900",
        ]
    )
    assert policy.allows("10.9.9.9", 5900)
    assert policy.allows("192.0.2.7", 5901)
    assert not policy.allows("192.0.2.7", 5902)
    assert policy.allows("vnc.example", 5905)
    assert policy.allows("vnc.example.", 5905)
    assert not policy.allows("other.example", 5905)
    assert policy.allows("2001:db8::9", 5900)
    assert not policy.allows("127.0.0.1", 5900)
    assert str(policy).startswith("10.0.0.0/8:5900-6999, 192.0.2.7/32:5901")


@pytest.mark.parametrize(
    "rule, why",
    [
        ("10.0.0.0/8", "HOST:PORTS"),
        ("10.0.0.0/8:0-5", "1-65535"),
        ("10.0.0.0/8:6000-5900", "low first"),
        ("10.0.0.0/8:x", "N or LOW-HIGH"),
        ("fd00::/8:5900", "brackets"),
        ("[fd00::/8]5900", "IPV6"),
        ("10.0.0.0/33:5900", "not a network"),
        (":5900", "HOST:PORTS"),
    ],
)
def test_bad_rules_say_why(rule, why):
    """A malformed rule is refused with a message naming the problem."""
    with pytest.raises(PolicyError, match=why):
        parse_rule(rule)


@given(st.ip_addresses(v=4), st.integers(1, 65535))
def test_a_host_name_never_matches_a_network(address, port):
    """Network rules judge addresses only; an address never matches a host-name rule."""
    policy = TargetPolicy.parse([f"{address}:1-65535"])
    assert policy.allows(str(address), port)
    assert not policy.allows("name.example", port)
    assert not TargetPolicy.parse([f"name.example:{port}"]).allows(str(address), port)
