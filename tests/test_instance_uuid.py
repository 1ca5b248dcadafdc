"""
C{instance_uuid} reaches the text log as it was sent: control characters
(a newline that forges a log line, an ESC that repaints a terminal, a
right-to-left override) are refused when a token is minted. nova sends its
instance's UUID as a string (C{9165dbda-f54e-4186-b2cb-e6ca05ac53ee}); other
control planes send their own names, so any other printable name is kept.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock

from txvnc.consoleauth.keys import KeyRing
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource
from txvnc.consoleauth.tokens import InvalidRequest, parse_token_request

KEY = "instance-uuid-test-key-" + "k" * 20
TARGET = {"host": "127.0.0.1", "port": 5901}
BAD = [
    "i-1\n2026-12-06T10:00:00+0000 [txvnc#info] forged line",
    "i-1\r",
    "\x1b[31mred",
    "tab\there",
    "nul\x00",
    "bidi\u202eevil",
    "line\u2028separator",
    "del\x7f",
]
GOOD = ["9165dbda-f54e-4186-b2cb-e6ca05ac53ee", "i-1", "web server 3", "vm-ünïcode"]


@pytest.mark.parametrize("name", BAD)
def test_control_characters_are_refused(name: str) -> None:
    """An instance_uuid with a control, format or line-separator character is an invalid request."""
    with pytest.raises(InvalidRequest, match="control characters"):
        parse_token_request({**TARGET, "instance_uuid": name})


@pytest.mark.parametrize("name", GOOD)
def test_printable_names_are_kept(name: str) -> None:
    """nova's UUIDs and other printable names are accepted as sent."""
    assert parse_token_request({**TARGET, "instance_uuid": name}).instance_uuid == name


@pytest_twisted.ensureDeferred
async def test_the_api_answers_400() -> None:
    """Minting through the token API with a newline in instance_uuid is 400, saying why."""
    api = ConsoleAuthResource(MemoryTokenStore(), KeyRing.single(KEY), Clock(), "http://proxy.test")
    http = StubTreq(api)
    response = await http.post(
        "http://api/v1/tokens",
        json={**TARGET, "instance_uuid": BAD[0]},
        headers={"Authorization": "Bearer " + KEY},
    )
    assert response.code == 400
    assert "control characters" in (await response.json())["error"]
