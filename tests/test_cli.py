"""
The C{txvnc} command against the real token API resource, in memory: what
each command prints and the exit status it ends with.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock

import txvnc
from txvnc import cli
from txvnc.client import ConsoleAuthClient
from txvnc.consoleauth.memory import MemoryTokenStore
from txvnc.consoleauth.resource import ConsoleAuthResource

KEY = "cli-test-key"


@dataclass
class Ran:
    """One command's exit status and output."""

    status: int
    out: str
    err: str


class Api:
    """
    The token API resource on a memory store, and the CLI run against it.
    """

    def __init__(self, key: str = KEY) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.resource = ConsoleAuthResource(
            MemoryTokenStore(), KEY, self.clock, "http://proxy.example:6080"
        )
        self.key = key

    def client(self) -> ConsoleAuthClient:
        return ConsoleAuthClient(
            StubTreq(self.resource), "http://api.test", self.key, self.clock
        )

    async def run(self, *argv: str) -> Ran:
        args = cli.parse_args(argv)
        out, err = io.StringIO(), io.StringIO()
        status = await cli.execute(self.client(), args, out, err)
        return Ran(status, out.getvalue(), err.getvalue())

    async def mint(self, **fields: object) -> str:
        answer = await self.client().create_token("127.0.0.1", 5900, **fields)
        return str(answer["token"])


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TXVNC_API_KEY", KEY)
    monkeypatch.delenv("TXVNC_VNC_PASSWORD", raising=False)


@pytest.fixture
def api() -> Api:
    return Api()


@pytest_twisted.ensureDeferred
async def test_revoking_a_known_token(api: Api) -> None:
    """Revoking a live token says so and exits 0; the token no longer opens a console."""
    token = await api.mint()
    ran = await api.run("console", "revoke", token)
    assert (ran.status, ran.out, ran.err) == (0, "Token revoked.\n", "")


@pytest_twisted.ensureDeferred
async def test_revoking_an_unknown_token_says_not_found(api: Api) -> None:
    """An unknown (or expired) token is not found: exit 4, a message on stderr, nothing on stdout."""
    ran = await api.run("console", "revoke", "no-such-token")
    assert ran.status == cli.NOT_FOUND == 4
    assert ran.out == ""
    assert "not found" in ran.err
    assert "no-such-token" not in ran.err
    # Revoked all the same: a console opened with it may still be open.
    _, events = await api.client().revocations(0)
    assert len(events) == 1


@pytest_twisted.ensureDeferred
async def test_revoking_twice(api: Api) -> None:
    """The second revocation of one token finds nothing to revoke."""
    token = await api.mint()
    assert (await api.run("console", "revoke", token)).status == 0
    assert (await api.run("console", "revoke", token)).status == cli.NOT_FOUND


def test_version(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`txvnc --version` prints the package's version and exits 0, needing no API key."""
    monkeypatch.delenv("TXVNC_API_KEY")
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"txvnc {txvnc.__version__}\n"
