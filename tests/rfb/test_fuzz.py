"""
Hypothesis against the message parsers (the browser's, and the server's
used when the clipboard may not leave the VM): whatever arrives, they either
forward well-formed messages or stop with an RFB error, never anything
else; and how the bytes are split never changes the result.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from txvnc.rfb.client_messages import ClientMessageFilter, Limits, StreamState
from txvnc.rfb.errors import RFBError
from txvnc.rfb.policy import CLIPBOARD_MODES, ConsolePolicy
from txvnc.rfb.server_messages import ServerMessageFilter

policies = st.builds(
    ConsolePolicy,
    view_only=st.booleans(),
    clipboard=st.sampled_from(CLIPBOARD_MODES),
    shared=st.booleans(),
)

messages = st.one_of(
    st.builds(lambda d, k: struct.pack("!BBxxI", 4, d, k), st.integers(0, 1), st.integers(0, 2**32 - 1)),
    st.builds(lambda b, x, y: struct.pack("!BBHH", 5, b, x, y), st.integers(0, 255), st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(lambda i, x: struct.pack("!BBHHHH", 3, i, x, x, x, x), st.integers(0, 1), st.integers(0, 65535)),
    st.builds(lambda t: struct.pack("!BxxxI", 6, len(t)) + t, st.binary(max_size=300)),
    st.builds(lambda e: struct.pack(f"!BxH{len(e)}i", 2, len(e), *e), st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40)),
    st.builds(lambda p: bytes([248, 0, 0, 0, 0, 0, 0, 1, len(p)]) + p, st.binary(max_size=64)),
    st.builds(lambda k: struct.pack("!BBHII", 255, 0, 1, k, 30), st.integers(0, 2**32 - 1)),
)


def run(policy: ConsolePolicy, data: bytes, step: int) -> tuple[bytes, str | None]:
    f = ClientMessageFilter(policy, StreamState(), Limits(max_cut_text=256, max_encodings=32))
    out = []
    try:
        for i in range(0, len(data), step):
            out.append(f.receive(data[i : i + step]))
    except RFBError as e:
        return b"".join(out), type(e).__name__
    return b"".join(out), None


@settings(max_examples=300, deadline=None)
@given(policies, st.binary(max_size=2000), st.integers(1, 64))
def test_random_bytes_are_forwarded_or_refused(policy: ConsolePolicy, data: bytes, step: int) -> None:
    """Arbitrary bytes never raise anything but an RFB error, and splitting does not matter."""
    whole = run(policy, data, len(data) or 1)
    assert verdict(run(policy, data, step)) == verdict(whole)
    assert len(whole[0]) <= len(data)


def verdict(result: tuple[bytes, str | None]) -> tuple[bytes | None, str | None]:
    """
    What must not depend on splitting: the output of a clean run, or the
    error (what passed before an error depends on where reads ended).
    """
    output, error = result
    return (output if error is None else None), error


@settings(max_examples=300, deadline=None)
@given(policies, st.lists(messages, max_size=30), st.integers(1, 50))
def test_valid_streams_keep_message_boundaries(policy: ConsolePolicy, stream: list[bytes], step: int) -> None:
    """Valid messages are never refused, and what passes re-parses to the same bytes."""
    data = b"".join(stream)
    forwarded, error = run(policy, data, step)
    oversized = any((m[0] == 6 and len(m) - 8 > 256) or (m[0] == 2 and len(m) > 4 + 4 * 32) for m in stream)
    if not oversized:
        assert error is None
        again, error = run(ConsolePolicy(), forwarded, 1)
        assert error is None and again == forwarded
        if policy.view_only:
            # Nothing left for a second view-only filter to drop.
            state = StreamState()
            ClientMessageFilter(ConsolePolicy(view_only=True), state).receive(forwarded)
            assert state.dropped == {}


def _raw_update(rects: list[tuple[int, int]]) -> bytes:
    out = struct.pack("!BxH", 0, len(rects))
    for w, h in rects:
        out += struct.pack("!HHHHi", 0, 0, w, h, 0) + bytes(w * h * 4)
    return out


server_messages = st.one_of(
    st.builds(_raw_update, st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=4)),
    st.just(b"\x02"),
    st.builds(lambda n: struct.pack("!BxHH", 1, 0, n) + bytes(6 * n), st.integers(0, 16)),
    st.builds(lambda t: struct.pack("!BxxxI", 3, len(t)) + t, st.binary(max_size=200)),
)


def run_server(data: bytes, step: int, policy: ConsolePolicy) -> tuple[bytes, str | None]:
    f = ServerMessageFilter(policy, StreamState(bytes_per_pixel=4))
    out = []
    try:
        for i in range(0, len(data), step):
            out.append(f.receive(data[i : i + step]))
    except RFBError as e:
        return b"".join(out), type(e).__name__
    return b"".join(out), None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_server_parser_survives_random_bytes(data: bytes, step: int) -> None:
    """Arbitrary server bytes give the same verdict however they are split, and never grow."""
    policy = ConsolePolicy(clipboard="none")
    whole = run_server(data, len(data) or 1, policy)
    assert verdict(run_server(data, step, policy)) == verdict(whole)
    assert len(whole[0]) <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(server_messages, max_size=20), st.integers(1, 80))
def test_server_parser_drops_exactly_the_cut_text(stream: list[bytes], step: int) -> None:
    """Valid server streams pass whole, minus their ServerCutText messages."""
    data = b"".join(stream)
    expected = b"".join(m for m in stream if m[0] != 3)
    assert run_server(data, step, ConsolePolicy(clipboard="to_vm")) == (expected, None)
