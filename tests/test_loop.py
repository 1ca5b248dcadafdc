"""
The reactor's lean loop (L{txvnc.ops.loop}): every turn does what Twisted's
C{mainLoop} turn does (timed calls, calls from threads, the shutdown event,
the poll's timeout), checked against Twisted's own turn on a twin reactor
under random schedules, and by a real reactor run over real sockets.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import protocol
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from txvnc.ops.dispatch import install as install_dispatch
from txvnc.ops.loop import LONGEST, LoopService, install, lean_turn, uninstall


class Twin:
    """
    An epoll reactor on a fake clock whose poll only notes its timeout, and
    what its timed calls, calls from threads and shutdown event did.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.polls: list[float | None] = []
        self.ran: list[str] = []
        self.calls: list = []
        self.many: list = []
        self.reactor = r = EPollReactor()
        r.seconds = lambda: self.now  # before any call is made: they copy it
        r.doIteration = self.polls.append  # type: ignore[method-assign]
        r._started = True
        r._stopped = False
        r.running = True
        r.addSystemEventTrigger("during", "shutdown", self.ran.append, "shutdown")

    def close(self) -> None:
        self.reactor.waker.connectionLost(None)
        self.reactor._poller.close()

    def state(self) -> tuple:
        r = self.reactor
        pending = sorted(
            (c.time, c.cancelled, c.delayed_time)
            for c in r._pendingTimedCalls + r._newTimedCalls
        )
        return (self.ran, self.polls, pending, len(r.threadCallQueue), r.running)


def twisted_turn(r: EPollReactor) -> None:
    """One turn of Twisted's C{mainLoop}, as ReactorBase.mainLoop writes it."""
    r.runUntilCurrent()
    t2 = r.timeout()
    t = r.running and t2
    r.doIteration(t)


step = st.one_of(
    st.tuples(st.just("later"), st.sampled_from([0, 0.001, 0.5, 1, 2.5, 3e6])),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
    st.tuples(st.just("reset"), st.integers(0, 30), st.sampled_from([0, 0.2, 4])),
    st.tuples(st.just("delay"), st.integers(0, 30), st.sampled_from([0.1, 2])),
    st.tuples(st.just("thread"), st.integers(0, 3)),
    st.tuples(st.just("many"), st.integers(40, 120)),
    st.tuples(st.just("cancel many"), st.none()),
    st.tuples(st.just("advance"), st.sampled_from([0, 0.0005, 0.3, 1, 5])),
    st.tuples(st.just("stop"), st.none()),
    st.tuples(st.just("turn"), st.none()),
    st.tuples(st.just("turn"), st.none()),
)


def apply(twin: Twin, op: str, arg, extra, n: int) -> None:
    r = twin.reactor
    live = [c for c in twin.calls if c.active()]
    if op == "later":
        twin.calls.append(r.callLater(arg, twin.ran.append, f"timer {n}"))
    elif op == "cancel" and live:
        live[arg % len(live)].cancel()
    elif op == "reset" and live:
        live[arg % len(live)].reset(extra)
    elif op == "delay" and live:
        live[arg % len(live)].delay(extra)
    elif op == "thread":
        r.callFromThread(twin.ran.append, f"from thread {n}")
    elif op == "many":
        twin.many = [r.callLater(60, twin.ran.append, "never") for _ in range(arg)]
    elif op == "cancel many":
        for call in twin.many:
            if call.active():
                call.cancel()
    elif op == "advance":
        twin.now += arg
    elif op == "stop" and not r._stopped:
        r.stop()


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_each_turn_does_what_twisteds_does(steps):
    """
    Under any schedule of timed calls (made, cancelled, reset, delayed, many
    cancelled at once), calls from threads, clock moves and a stop, a lean
    turn runs the same calls in the same order, fires the shutdown event at
    the same turn, keeps the same timed calls and gives the poll the same
    timeout as Twisted's turn.
    """
    ours, theirs = Twin(), Twin()
    turn = lean_turn(ours.reactor)
    try:
        for n, (op, arg, *rest) in enumerate(steps):
            extra = rest[0] if rest else None
            if op == "turn":
                turn()
                twisted_turn(theirs.reactor)
            else:
                apply(ours, op, arg, extra, n)
                apply(theirs, op, arg, extra, n)
            assert ours.state() == theirs.state()
        turn()
        twisted_turn(theirs.reactor)
        assert ours.state() == theirs.state()
    finally:
        ours.close()
        theirs.close()


def test_turns_with_nothing_due_skip_the_bookkeeping():
    """
    A turn with a timed call pending but not due polls for the time left
    (capped as Twisted caps it) without calling runUntilCurrent; the turn
    it is due calls it, and the call runs.
    """
    twin = Twin()
    r = twin.reactor
    calls = []
    r.runUntilCurrent = lambda real=r.runUntilCurrent: (calls.append(1), real())  # type: ignore[method-assign]
    turn = lean_turn(r)
    r.callLater(2, twin.ran.append, "due")
    turn()  # a new timed call: Twisted's bookkeeping takes it in
    assert calls == [1] and twin.polls == [2]
    twin.now += 1.5
    turn()
    assert calls == [1] and twin.polls[-1] == pytest.approx(0.5)
    twin.now += 0.5
    turn()
    assert calls == [1, 1] and twin.ran == ["due"] and twin.polls[-1] is None
    r.callLater(3e7, twin.ran.append, "far")
    turn()
    turn()
    assert twin.polls[-2:] == [LONGEST, LONGEST]
    twin.close()


@pytest.mark.parametrize(("made", "cancelled", "left"), [(80, 60, 20), (120, 55, 120)])
def test_cancelled_calls_are_compacted_on_the_same_turn_as_twisteds(
    made, cancelled, left
):
    """
    Once more than 50 timed calls, and more than half of them, are
    cancelled, the next turn drops them from the heap (Twisted's
    runUntilCurrent does), though none is due; fewer stay there.
    """
    ours, theirs = Twin(), Twin()
    turn = lean_turn(ours.reactor)
    for twin in (ours, theirs):
        twin.many = [
            twin.reactor.callLater(60, twin.ran.append, "x") for _ in range(made)
        ]
    turn()
    twisted_turn(theirs.reactor)
    for twin in (ours, theirs):
        for call in twin.many[:cancelled]:
            call.cancel()
    turn()
    twisted_turn(theirs.reactor)
    assert len(ours.reactor._pendingTimedCalls) == left
    assert ours.state() == theirs.state()
    ours.close()
    theirs.close()


def test_install_once_uninstall_and_other_reactors():
    """Installed once on a Twisted reactor with its own mainLoop, given back by uninstall; others are left alone."""
    r = EPollReactor()
    try:
        assert install(r)
        assert not install(r)
        assert r.mainLoop.lean
        uninstall(r)
        assert "mainLoop" not in vars(r)
        assert not install(MemoryReactorClock())

        class OwnLoop(EPollReactor):
            def mainLoop(self) -> None:  # pragma: no cover - never run
                pass

        other = OwnLoop()
        assert not install(other)
        other._poller.close()
        service = LoopService(r)
        service.startService()
        assert r.mainLoop.lean
        service.stopService()
        assert "mainLoop" not in vars(r)
    finally:
        r._poller.close()


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Client(protocol.Protocol):
    def __init__(self, done) -> None:
        self.got = b""
        self.done = done

    def connectionMade(self) -> None:
        self.transport.write(b"x" * 10)

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        if len(self.got) < 1000:
            self.transport.write(b"x" * 10)
        else:
            self.done()


def test_a_real_reactor_runs_sockets_timers_and_threads_on_the_lean_loop():
    """
    A real epoll reactor run with the lean loop (and the relay dispatch):
    a loopback TCP echo of 100 round trips, a timed call that is due
    meanwhile, and a call from another thread that stops the reactor; an
    error escaping a turn is logged and the loop goes on. Most turns skip
    runUntilCurrent.
    """
    r = EPollReactor()
    assert install(r) and install_dispatch(r)
    turns, bookkeeping = [], []
    real_ruc, real_poll = r.runUntilCurrent, r.doIteration
    r.runUntilCurrent = lambda: (bookkeeping.append(1), real_ruc())  # type: ignore[method-assign]
    uninstall(r)
    install(r)  # binds the counting runUntilCurrent
    failed = []

    def poll(timeout):
        turns.append(timeout)
        if len(turns) == 5:
            failed.append(1)
            raise RuntimeError("bug in a turn")
        real_poll(timeout)

    r.doIteration = poll  # type: ignore[method-assign]
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    done: list[str] = []
    client_done = threading.Event()

    def from_thread() -> None:
        client_done.wait(10)
        r.callFromThread(done.append, "thread")
        r.callFromThread(r.stop)

    port = r.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    client = Client(client_done.set)
    protocol.ClientCreator(r, lambda: client).connectTCP(
        "127.0.0.1", port.getHost().port
    )
    r.callLater(0.001, done.append, "timer")
    worker = threading.Thread(target=from_thread)
    r.callWhenRunning(worker.start)
    watchdog = r.callLater(30, r.stop)
    try:
        r.run(installSignalHandlers=False)
    finally:
        globalLogPublisher.removeObserver(events.append)
        worker.join()
        r._poller.close()
    assert not watchdog.active() or watchdog.cancel() is None
    assert len(client.got) >= 1000
    assert done == ["timer", "thread"]
    assert failed and any(
        "Unexpected error in main loop" in str(e.get("log_format")) for e in events
    )
    assert any(e.get("log_format") == "Main loop terminated." for e in events)
    assert len(bookkeeping) < len(turns) / 2
