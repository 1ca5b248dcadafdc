"""
Property tests (hypothesis) for the parsers a stranger's bytes reach: token
extraction, origin matching, the token API's request validation, and the
fuzz target that C{make fuzz} runs under atheris.
"""

from __future__ import annotations

import importlib.util
import json
import string
import unicodedata
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock

from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.consoleauth.tokens import InvalidRequest, parse_token_request
from txvnc.proxy.origin import origin_allowed
from txvnc.proxy.tokens import MAX_TOKEN_LENGTH, extract_token

URLSAFE = string.ascii_letters + string.digits + "-_"
tokens = st.text(URLSAFE, min_size=1, max_size=MAX_TOKEN_LENGTH)
junk = st.text(max_size=300)
params = st.dictionaries(junk, st.lists(junk, max_size=3), max_size=4)
hosts = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}\Z")
ports = st.integers(1, 65535)
schemes = st.sampled_from(["http", "https"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | junk,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(junk, inner, max_size=4),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "host": st.one_of(hosts, junk, st.integers(), st.none()),
        "port": st.one_of(ports, st.integers(), junk, st.booleans()),
        "instance_uuid": st.one_of(junk, st.none(), st.integers()),
        "console_type": st.one_of(st.just("novnc"), junk),
        "ttl": st.one_of(st.integers(), st.floats(), junk),
    },
)


# Token extraction


@given(params, st.one_of(st.none(), junk))
def test_extraction_never_fails_and_returns_a_plausible_token(p, cookie):
    """Whatever the query and cookie hold, extraction returns None or a stripped token of at most 256 characters."""
    token = extract_token(p, cookie)
    assert token is None or (0 < len(token) <= MAX_TOKEN_LENGTH and token == token.strip())


@given(tokens)
def test_each_form_yields_the_token(token):
    """A token in the query, in noVNC's path parameter, or in the cookie is found as is."""
    assert extract_token({"token": [token]}, None) == token
    assert extract_token({"path": [f"websockify?token={token}"]}, None) == token
    assert extract_token({}, f"other=1; token={token}") == token


@given(tokens, tokens, tokens)
def test_query_beats_path_beats_cookie(query, path, cookie):
    """The query's token wins over the path parameter's, which wins over the cookie's."""
    both = {"token": [query], "path": [f"?token={path}"]}
    assert extract_token(both, f"token={cookie}") == query
    assert extract_token({"path": [f"?token={path}"]}, f"token={cookie}") == path


@given(st.text(URLSAFE, min_size=MAX_TOKEN_LENGTH + 1, max_size=2000))
def test_overlong_token_is_ignored(token):
    """A token over 256 characters is treated as no token."""
    assert extract_token({"token": [token]}, f"token={token}") is None


# Origin matching


@given(junk, st.one_of(st.none(), junk), st.lists(junk, max_size=3))
def test_origin_check_never_fails(origin, host, allowed):
    """Any Origin, Host and allowed list gives a yes or no, never an exception."""
    assert isinstance(origin_allowed(origin, host, allowed), bool)


@given(schemes, hosts, ports)
def test_same_origin_is_allowed(scheme, host, port):
    """An Origin naming the Host header's host and port is allowed, in any letter case."""
    assert origin_allowed(f"{scheme}://{host}:{port}", f"{host}:{port}")
    assert origin_allowed(f"{scheme}://{host.upper()}:{port}", f"{host}:{port}")


@given(schemes, hosts, hosts, ports)
def test_foreign_origin_is_refused(scheme, evil, ours, port):
    """An Origin on another host is refused unless allowed, by name or by its full origin."""
    if evil == ours:
        return
    origin = f"{scheme}://{evil}:{port}"
    assert not origin_allowed(origin, f"{ours}:{port}")
    assert not origin_allowed(origin, f"{ours}:{port}", [ours, f"{scheme}://{ours}"])
    assert origin_allowed(origin, f"{ours}:{port}", [evil])
    assert origin_allowed(origin, f"{ours}:{port}", [origin])


@given(st.sampled_from(["null", "NULL", " null ", "file://", "data:,", "about:blank"]), hosts)
def test_opaque_origins_are_refused(origin, host):
    """The null origin and other opaque ones are refused, even when every origin is allowed."""
    assert not origin_allowed(origin, host, [host])
    assert not origin_allowed(origin, host, ["*"])


# The token API's request validation


@given(json_values)
def test_validation_accepts_or_says_why(body):
    """Any JSON body is either a valid request or an InvalidRequest with a message, never another exception."""
    try:
        wanted = parse_token_request(body)
    except InvalidRequest as e:
        assert str(e)
    else:
        assert isinstance(body, dict)
        assert wanted.host == body["host"] and 1 <= wanted.port <= 65535


@given(fields)
def test_validation_of_token_fields(body):
    """Requests built from plausible and implausible fields are accepted exactly when every field is valid."""
    valid = (
        isinstance(body.get("host"), str)
        and 0 < len(body["host"]) <= 255
        and not any(
            c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "/?#@"
            for c in body["host"]
        )
        and type(body.get("port")) is int
        and 1 <= body["port"] <= 65535
        and (
            body.get("instance_uuid") is None
            or (
                isinstance(body["instance_uuid"], str)
                and 0 < len(body["instance_uuid"]) <= 255
                and "/" not in body["instance_uuid"]
                # Printable: no control, format or line-separator characters.
                and all(
                    unicodedata.category(c)[0] != "C"
                    and unicodedata.category(c) not in ("Zl", "Zp")
                    for c in body["instance_uuid"]
                )
            )
        )
        and body.get("console_type", "novnc") == "novnc"
        and type(body.get("ttl", 600)) is int
        and 0 < body.get("ttl", 600) <= 86400
    )
    try:
        parse_token_request(body)
    except InvalidRequest:
        assert not valid
    else:
        assert valid


def call(http: StubTreq, deferred: Any) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    http.flush()
    assert results, "the stub request did not finish"
    return results[0]


@settings(max_examples=150)
@given(st.one_of(st.binary(max_size=2000), json_values.map(lambda v: json.dumps(v).encode())))
def test_api_answers_any_body_with_201_or_400(body):
    """The real API resource answers any POST body with 201 or a 400 naming the problem, never a 500."""
    store = MemoryTokenStore()
    resource = ConsoleAuthResource(store, "key", Clock(), "http://proxy.test")
    http = StubTreq(resource)
    response = call(
        http,
        http.post(
            "http://api.test/v1/tokens",
            data=body,
            headers={b"Authorization": [b"Bearer key"]},
        ),
    )
    content = call(http, response.content())
    assert response.code in (201, 400), (response.code, content)
    answer = json.loads(content)
    assert ("token" in answer) if response.code == 201 else answer["error"]


# The fuzz target


def _fuzz_target() -> Any:
    path = Path(__file__).resolve().parents[2] / "fuzz" / "parsers.py"
    spec = importlib.util.spec_from_file_location("fuzz_parsers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = _fuzz_target()


@settings(max_examples=500)
@given(st.binary(max_size=1000))
def test_fuzz_target_holds_on_random_input(data):
    """The atheris target's properties hold for random bytes (so make fuzz starts from a working target)."""
    FUZZ.check(data)
