"""
The brute-force guard, on a Clock.
"""

from twisted.internet.task import Clock

from txvnc.proxy.guard import AuthFailureGuard, address_of, client_key


def test_address_of_drops_the_port():
    """Failures are counted per address, whatever the client's source port."""
    assert address_of("192.0.2.1:5555") == "192.0.2.1"
    assert address_of("::1:5555") == "::1"
    assert address_of("unix") == "unix"


def test_cooldown_after_the_limit_then_release():
    """The 21st failure within a minute starts a one-minute cool-down, reported once."""
    clock = Clock()
    guard = AuthFailureGuard(clock, max_failures=20)
    starts = [guard.failed("a") for _ in range(20)]
    assert not any(starts) and not guard.blocked("a")
    assert guard.failed("a") is True
    assert guard.blocked("a") and not guard.blocked("b")
    clock.advance(59.9)
    assert guard.blocked("a")
    clock.advance(0.2)
    assert not guard.blocked("a")
    assert guard.failed("a") is False


def test_failures_older_than_a_minute_do_not_count():
    """A slow trickle of failures never trips the guard."""
    clock = Clock()
    guard = AuthFailureGuard(clock, max_failures=3)
    for _ in range(50):
        assert guard.failed("a") is False
        clock.advance(20.1)
    assert not guard.blocked("a")


def test_zero_turns_the_guard_off():
    """--max-auth-failures 0 never blocks anyone."""
    guard = AuthFailureGuard(Clock(), max_failures=0)
    assert not any(guard.failed("a") for _ in range(1000))
    assert not guard.blocked("a")


def test_memory_is_bounded_under_a_flood_of_addresses():
    """Tracking many addresses stays within the bound, keeping cool-downs."""
    clock = Clock()
    guard = AuthFailureGuard(clock, max_failures=1, max_tracked=100)
    guard.failed("x")
    guard.failed("x")
    for i in range(1000):
        guard.failed(f"10.0.{i // 256}.{i % 256}")
        clock.advance(0.001)
    assert len(guard._failures) <= 100
    assert guard.blocked("x")


def test_ipv6_clients_are_counted_per_64():
    """Addresses of one IPv6 /64 share one budget; another /64 has its own; IPv4-mapped IPv6 counts as the IPv4 address."""
    guard = AuthFailureGuard(Clock(), max_failures=2)
    for address in ("2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"):
        guard.failed(address)
    assert guard.blocked("2001:db8::abcd")
    assert not guard.blocked("2001:db8:0:1::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("[2001:db8::1]") == "2001:db8::/64"
    assert client_key("unix") == "unix"


def test_a_blocked_client_is_checked_at_the_guards_pace():
    """Over its budget a client's checks are spaced window/max_failures apart; one that would wait over max_wait is refused."""
    clock = Clock()
    guard = AuthFailureGuard(clock, max_failures=20, max_wait=10.0)
    for _ in range(21):
        guard.failed("a")
    assert guard.blocked("a") and guard.pace == 3.0
    assert [guard.next_check("a") for _ in range(5)] == [0.0, 3.0, 6.0, 9.0, None]
    clock.advance(6.0)
    assert guard.next_check("a") == 6.0
    assert guard.next_check("b") == 0.0  # only asked of blocked clients


def test_failures_while_blocked_extend_the_cool_down():
    """A client that keeps failing stays blocked until it has failed none for the cool-down."""
    clock = Clock()
    guard = AuthFailureGuard(clock, max_failures=2)
    for _ in range(3):
        guard.failed("a")
    clock.advance(50)
    assert guard.failed("a") is False
    clock.advance(50)
    assert guard.blocked("a")
    clock.advance(10.1)
    assert not guard.blocked("a")
