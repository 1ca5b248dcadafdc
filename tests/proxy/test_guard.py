"""
The brute-force guard, on a Clock.
"""

from twisted.internet.task import Clock

from txvnc.proxy.guard import AuthFailureGuard, address_of


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
