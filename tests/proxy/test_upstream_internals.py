"""
The private parts of Twisted and Autobahn that L{txvnc.proxy.fastpath},
L{txvnc.ops.spin}, L{txvnc.ops.dispatch} and L{txvnc.ops.loop} rely on, checked by name and
shape and then by behaviour, so that a new release that moves them fails here, loudly and by name,
instead of somewhere deep in a relay test (or, worse, silently: a spinner
that is no longer called, a debug line formatted again).

setup.cfg bounds both dependencies to the releases these tests passed on;
raising a bound means running this module first.
"""

from __future__ import annotations

import inspect
import os
import select
import socket
import struct
from collections import deque

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import tcp
from twisted.internet.base import DelayedCall, ReactorBase
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import StringTransport

from txvnc.ops.dispatch import install as dispatch_install
from txvnc.ops.dispatch import uninstall as dispatch_uninstall
from txvnc.ops.loop import COMPACT_AFTER, LONGEST
from txvnc.ops.loop import install as loop_install
from txvnc.ops.loop import uninstall as loop_uninstall
from txvnc.ops.spin import SpinningPoller, install, uninstall
from txvnc.proxy.fastpath import (
    FastWebSocketProtocol,
    send_now,
    tune,
    writable_now,
)

# -- Twisted: the TCP transport's buffers and socket (fastpath.tune, send_now)


@pytest.fixture
def tcp_connection():
    """A real L{tcp.Connection} over one end of a socket pair."""
    a, b = socket.socketpair()
    a.setblocking(False)
    reactor = EPollReactor()
    conn = tcp.Connection(a, None, reactor)
    conn.connected = 1
    yield conn, b
    a.close()
    b.close()
    reactor._poller.close()


def test_twisted_tcp_connection_has_the_buffers_fastpath_reads(tcp_connection):
    """The attributes L{writable_now} and L{send_now} read exist with the expected types."""
    conn, _ = tcp_connection
    assert conn.TLS is False
    assert isinstance(conn.dataBuffer, bytes)
    assert isinstance(conn.offset, int)
    assert isinstance(conn._tempDataLen, int)
    assert isinstance(conn._tempDataBuffer, list)
    assert isinstance(conn.socket, socket.socket)
    assert isinstance(tcp.Connection.SEND_LIMIT, int)
    assert isinstance(tcp.Connection.bufferSize, int)
    assert not conn.disconnecting


def test_twisted_transport_tuning_and_direct_send_keep_order(tcp_connection):
    """
    Tuned sizes are honoured, a direct send goes out at once, and bytes
    queued in Twisted's buffer make the next send queue behind them.
    """
    conn, peer = tcp_connection
    tune(conn)
    assert conn.bufferSize == 124 * 1024
    assert writable_now(conn)
    send_now(conn, [b"head", b"body"])
    assert peer.recv(100) == b"headbody"
    conn.write(b"queued")  # stays in Twisted's buffer until the reactor writes
    assert conn._tempDataLen == len(b"queued")
    assert not writable_now(conn)
    send_now(conn, [b"-after"])
    assert conn._tempDataLen == len(b"queued-after")
    conn.doWrite()
    assert peer.recv(100) == b"queued-after"
    assert writable_now(conn)


# -- Twisted: the epoll reactor's poller (ops.spin)


def test_epoll_reactor_waits_through_its_poller_attribute():
    """
    C{EPollReactor._poller} is an epoll object and the reactor's wait goes
    through its C{poll(timeout, maxevents)}: the spinner sees every wait.
    """
    reactor = EPollReactor()
    epoll = reactor._poller
    try:
        assert isinstance(epoll, select.epoll)
        assert install(reactor, 100, cpus=2)
        spinner = reactor._poller
        assert isinstance(spinner, SpinningPoller)
        calls = []
        real_poll = spinner.poll

        def counting(timeout=-1, maxevents=-1):
            calls.append((timeout, maxevents))
            return real_poll(timeout, maxevents)

        spinner.poll = counting  # type: ignore[method-assign]
        reactor.doIteration(0.001)
        assert len(calls) == 1
        uninstall(reactor)
        assert reactor._poller is epoll
    finally:
        epoll.close()


# -- Autobahn: the compiled masker (fastpath.unmask)


def test_autobahn_nvx_masker_has_the_functions_unmask_calls():
    """
    Autobahn's NVX extension (C{_nvx_xormasker}) is there and its
    C{nvx_xormask_new(mask)} copies the mask, C{nvx_xormask_process}
    XORs a buffer in place from the start of the mask, and
    C{nvx_xormask_free} frees it.
    """
    from _nvx_xormasker import ffi, lib

    mask = bytearray(b"\x01\x02\x03\x04")
    masker = lib.nvx_xormask_new(bytes(mask))
    mask[:] = b"\x00\x00\x00\x00"
    data = bytearray(b"\x00" * 4100)
    lib.nvx_xormask_process(masker, ffi.from_buffer(data), len(data))
    lib.nvx_xormask_free(masker)
    assert bytes(data) == (b"\x01\x02\x03\x04" * 1025)


# -- Twisted: the epoll reactor's dispatch (ops.dispatch)


def test_epoll_reactor_dispatch_is_the_one_ops_dispatch_replaces():
    """
    C{doIteration} is C{doPoll}, which polls C{_poller} for at most
    C{len(_selectables)} events and hands each, through C{callWithLogger},
    to C{_doReadOrWrite(selectable, fd, event)}: the loop
    L{txvnc.ops.dispatch.lean_do_poll} copies, minus the log context.
    """
    assert EPollReactor.doIteration is EPollReactor.doPoll
    source = inspect.getsource(EPollReactor.doPoll)
    assert "self._poller.poll(timeout, len(self._selectables))" in source
    assert "log.callWithLogger(selectable, _drdw, selectable, fd, event)" in source
    assert list(inspect.signature(EPollReactor._doReadOrWrite).parameters) == [
        "self",
        "selectable",
        "fd",
        "event",
    ]
    # A plain read event: Twisted calls doRead and disconnects on what it
    # returns or raises; lean_do_poll does the same without the fileno check.
    assert EPollReactor._POLL_IN == select.EPOLLIN
    handler = inspect.getsource(EPollReactor._doReadOrWrite)
    assert "why = selectable.doRead()" in handler
    assert "self._disconnectSelectable(selectable, why, inRead)" in handler
    assert list(inspect.signature(EPollReactor._disconnectSelectable).parameters) == [
        "self",
        "selectable",
        "why",
        "isRead",
        "faildict",
    ]
    reactor = EPollReactor()
    try:
        assert isinstance(reactor._selectables, dict)
        assert dispatch_install(reactor)
        dispatch_uninstall(reactor)
    finally:
        reactor._poller.close()


# -- Twisted: the reactor's loop (ops.loop)


def test_reactor_loop_is_the_one_ops_loop_replaces():
    """
    C{run} starts the reactor, then calls C{mainLoop}, whose turn is
    C{runUntilCurrent}, C{timeout} and C{doIteration(running and
    timeout)} under the "Unexpected error in main loop" handler; and
    C{runUntilCurrent} does something only for a call from a thread, a
    new timed call, a due one, more than 50 cancellations making up more
    than half the heap, or a stop: the conditions L{txvnc.ops.loop}'s
    turn checks before it skips both. C{timeout} is the earliest call's
    time less C{seconds()}, capped at L{LONGEST}.
    """
    run = inspect.getsource(ReactorBase.run)
    assert run.index("self.startRunning(") < run.index("self.mainLoop()")
    assert EPollReactor.run is ReactorBase.run
    assert EPollReactor.mainLoop is ReactorBase.mainLoop
    loop = inspect.getsource(ReactorBase.mainLoop)
    for line in (
        "while self._started:",
        "with _topHandler:",
        "self.runUntilCurrent()",
        "t2 = self.timeout()",
        "t = self.running and t2",
        "self.doIteration(t)",
        '_log.info("Main loop terminated.")',
    ):
        assert line in loop, line
    assert "Unexpected error in main loop" in inspect.getsource(
        inspect.getmodule(ReactorBase)
    )
    bookkeeping = inspect.getsource(ReactorBase.runUntilCurrent)
    for line in (
        "if self.threadCallQueue:",
        "self._insertNewDelayedCalls()",
        "now = self.seconds()",
        "while self._pendingTimedCalls and (self._pendingTimedCalls[0].time <= now):",
        f"self._cancellations > {COMPACT_AFTER}",
        "and self._cancellations > len(self._pendingTimedCalls) >> 1",
        "if self._justStopped:",
    ):
        assert line in bookkeeping, line
    inserting = inspect.getsource(ReactorBase._insertNewDelayedCalls)
    assert "if not self._newTimedCalls:" in inserting
    timeout = inspect.getsource(ReactorBase.timeout)
    for line in (
        "if not self._pendingTimedCalls:",
        "delay = self._pendingTimedCalls[0].time - self.seconds()",
        f"longest = {LONGEST}",
        "return max(0, min(longest, delay))",
    ):
        assert line in timeout, line
    assert "time" in inspect.signature(DelayedCall.__init__).parameters
    reactor = EPollReactor()
    try:
        assert isinstance(reactor.threadCallQueue, list)
        assert isinstance(reactor._newTimedCalls, list)
        assert isinstance(reactor._pendingTimedCalls, list)
        assert reactor._cancellations == 0
        assert reactor._justStopped is False
        call = reactor.callLater(5, lambda: None)
        assert reactor._newTimedCalls == [call]
        reactor.timeout()
        assert reactor._pendingTimedCalls == [call] and isinstance(call.time, float)
        call.cancel()
        assert reactor._cancellations == 1
        assert loop_install(reactor)
        loop_uninstall(reactor)
    finally:
        reactor.waker.connectionLost(None)
        reactor._poller.close()


# -- Autobahn: the server protocol's state (fastpath.FastWebSocketProtocol)


class Echo(FastWebSocketProtocol):
    def onOpen(self) -> None:
        self.got: list[bytes] = []
        self.relay_binary_frames(self.got.extend, 1 << 20)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.got.append(b"autobahn:" + payload)


def masked(payload: bytes, opcode: int = 2) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def open_echo() -> tuple[Echo, StringTransport]:
    factory = WebSocketServerFactory("ws://127.0.0.1")
    factory.protocol = Echo
    factory.setProtocolOptions(openHandshakeTimeout=7)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()
    transport.clear()
    return proto, transport


def test_autobahn_protocol_has_the_state_fastpath_reads():
    """The attributes and methods the fast path reads and calls exist with the expected shape."""
    cls = FastWebSocketProtocol
    assert isinstance(cls.CONFIG_ATTRS, (list, tuple)) and all(
        isinstance(a, str) for a in cls.CONFIG_ATTRS
    )
    assert "openHandshakeTimeout" in cls.CONFIG_ATTRS
    for name in ("_connectionMade", "_dataReceived", "sendCloseFrame", "sendMessage"):
        assert callable(getattr(cls, name)), name
    params = inspect.signature(cls.sendCloseFrame).parameters
    assert {"code", "reasonUtf8"} <= set(params)
    assert isinstance(WebSocketProtocol.STATE_OPEN, int)
    proto, _ = open_echo()
    assert proto.state == WebSocketProtocol.STATE_OPEN
    assert proto.data == b""
    assert isinstance(proto.send_queue, deque)
    assert proto.current_frame is None
    assert proto.inside_message is False
    assert proto.localCloseCode is None and proto.localCloseReason is None
    assert proto.wasNotCleanReason is None
    assert create_xor_masker(b"abcd", 2000).process(b"\0" * 8) == b"abcdabcd"


def test_autobahn_connection_skips_the_debug_pformat_and_keeps_the_options(monkeypatch):
    """
    Opening a connection formats nothing for Autobahn's configuration debug
    line (it pretty-printed some 30 options with pprint.pformat on every
    connection; now an empty list), and the
    protocol still gets every option from its factory.
    """
    calls = []
    real = autobahn_protocol.pformat
    monkeypatch.setattr(
        autobahn_protocol, "pformat", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    proto, _ = open_echo()
    assert all(args == ([],) for args in calls)  # an empty list at most
    assert proto.openHandshakeTimeout == 7
    for name in type(proto).CONFIG_ATTRS:
        assert getattr(proto, name) == getattr(proto.factory, name), name


def test_autobahn_frames_fast_path_and_autobahn_path_interleave():
    """
    Binary frames go through the fast path; a text frame, a frame cut by a
    read and a close go through Autobahn, in order, on the same connection.
    """
    proto, transport = open_echo()
    one, two = masked(b"one"), masked(b"x" * 300)
    proto.dataReceived(one + two[:5])
    assert proto.got == [b"one"]
    proto.dataReceived(two[5:] + masked(b"hi", opcode=1))
    assert proto.got == [b"one", b"x" * 300, b"autobahn:hi"]
    assert proto.send_binary(b"out")
    assert transport.value() == b"\x82\x03out"
    proto.close_with(1011, "internal error")
    assert proto.local_close[0] == 1011
    assert transport.value().startswith(b"\x82\x03out\x88")
