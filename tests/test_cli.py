"""
The C{txvnc} command against the real token API resource, in memory: what
each command prints and the exit status it ends with.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

import txvnc
from txvnc import cli
from txvnc.client import OperatorClient
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

    def client(self) -> OperatorClient:
        return OperatorClient(
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


CREATE = ("console", "create", "--host", "127.0.0.1", "--port", "5900", "--instance-uuid", "u-1")


@pytest_twisted.ensureDeferred
async def test_create_prints_a_table_by_default(api: Api) -> None:
    """Without -f, create prints nova's Type/Url table."""
    ran = await api.run(*CREATE)
    assert ran.status == 0
    lines = ran.out.splitlines()
    assert lines[1].split() == ["|", "Type", "|", "Url", "|"]
    assert lines[3].startswith("| novnc | http://proxy.example:6080/vnc_auto.html?token=")


@pytest_twisted.ensureDeferred
async def test_create_as_json_carries_the_api_answer(api: Api) -> None:
    """-f json prints the API's answer to POST /v1/tokens, every field of it, and the token works."""
    ran = await api.run(*CREATE, "--ttl", "60", "-f", "json")
    assert ran.status == 0
    answer = json.loads(ran.out)
    assert set(answer) == {"token", "access_url", "expires_at", "instance_uuid", "console_type", "single_use"}
    assert answer["instance_uuid"] == "u-1"
    assert answer["access_url"].endswith("?token=" + answer["token"])
    assert await api.client().check_token(answer["token"]) is not None


@pytest_twisted.ensureDeferred
async def test_create_as_values(api: Api) -> None:
    """-f value prints the table's values on one line; with -c, just the fields named, in that order."""
    ran = await api.run(*CREATE, "-f", "value")
    kind, url = ran.out.split()
    assert kind == "novnc" and url.startswith("http://proxy.example:6080/vnc_auto.html?token=")
    ran = await api.run(*CREATE, "-f", "value", "-c", "access_url")
    assert ran.out.count("\n") == 1 and ran.out.startswith("http://proxy.example")
    ran = await api.run(*CREATE, "-f", "value", "-c", "instance_uuid", "-c", "single_use")
    assert ran.out == "u-1 false\n"


@pytest_twisted.ensureDeferred
async def test_an_unknown_column_mints_nothing(api: Api) -> None:
    """-c naming no field of the answer is a usage error (exit 2), found before a token is minted."""
    with pytest.raises(SystemExit) as exited:
        await api.run(*CREATE, "-f", "value", "-c", "url")
    assert exited.value.code == cli.USAGE
    assert await api.client().list_tokens() == []


@pytest_twisted.ensureDeferred
async def test_list_as_json_and_values(api: Api) -> None:
    """list -f json is GET /v1/tokens' array, fields as the API names them; -f value one line a token."""
    await api.mint(instance_uuid="u-1")
    await api.mint(instance_uuid="u-2", single_use=True)
    ran = await api.run("console", "list", "-f", "json")
    tokens = json.loads(ran.out)
    assert tokens == (await api.client().list_tokens())
    assert {t["instance_uuid"] for t in tokens} == {"u-1", "u-2"}
    ran = await api.run("console", "list", "-f", "value", "-c", "instance_uuid", "-c", "single_use")
    assert sorted(ran.out.splitlines()) == ["u-1 false", "u-2 true"]
    ran = await api.run("console", "list", "-f", "value")
    hashes = {t["token_hash"] for t in tokens}
    assert {line.split()[0] for line in ran.out.splitlines()} == hashes
    assert [len(line.split()) for line in ran.out.splitlines()] == [5, 5]


@pytest_twisted.ensureDeferred
async def test_list_as_json_with_columns(api: Api) -> None:
    """-c keeps only the named fields in JSON too."""
    await api.mint(instance_uuid="u-1")
    ran = await api.run("console", "list", "-f", "json", "-c", "instance_uuid", "-c", "port")
    assert json.loads(ran.out) == [{"instance_uuid": "u-1", "port": 5900}]


@pytest_twisted.ensureDeferred
async def test_empty_lists(api: Api) -> None:
    """No tokens: an empty JSON array, no value lines, a table with only its headers."""
    assert json.loads((await api.run("console", "list", "-f", "json")).out) == []
    assert (await api.run("console", "list", "-f", "value")).out == ""
    table = (await api.run("console", "list")).out.splitlines()
    assert len(table) == 4 and "Token hash" in table[1]


@pytest_twisted.ensureDeferred
async def test_sessions_as_json(api: Api) -> None:
    """sessions -f json is GET /v1/sessions' array (empty here: no proxy reported any)."""
    ran = await api.run("console", "sessions", "-f", "json")
    assert (ran.status, json.loads(ran.out)) == (0, [])


@pytest_twisted.ensureDeferred
async def test_actions_as_json_and_values(api: Api) -> None:
    """revoke and revoke-instance say what they did as a JSON object, or its values, instead of a sentence."""
    token = await api.mint(instance_uuid="u-1")
    ran = await api.run("console", "revoke", token, "-f", "json")
    revoked = json.loads(ran.out)
    assert revoked == {"token_hash": revoked["token_hash"], "revoked": True}
    assert len(revoked["token_hash"]) == 64 and token not in ran.out
    ran = await api.run("console", "revoke-instance", "u-1", "-f", "value")
    assert ran.out == "u-1 true\n"


@pytest_twisted.ensureDeferred
async def test_killing_an_unknown_console_is_not_found(api: Api) -> None:
    """kill of a console no proxy holds exits 4 (not found), like revoke of an unknown token."""
    ran = await api.run("console", "kill", "no-such-session")
    assert ran.status == cli.NOT_FOUND
    assert "no such console session" in ran.err


@pytest_twisted.ensureDeferred
async def test_refusals_and_outages_have_their_own_status() -> None:
    """A wrong key is exit 1 (refused); an API answering 5xx is exit 3 (unavailable); each one line on stderr."""
    wrong = Api(key="wrong-key")
    ran = await wrong.run("console", "list", "-f", "json")
    assert (ran.status, ran.out) == (cli.REFUSED, "")
    assert ran.err.count("\n") == 1 and "check the API key" in ran.err

    class Broken(Resource):
        isLeaf = True

        def render(self, request):
            request.setResponseCode(503)
            return b""

    broken = Api()
    broken.resource = Broken()
    ran = await broken.run("console", "list")
    assert (ran.status, ran.out) == (cli.UNAVAILABLE, "")
    assert "503" in ran.err


@pytest.mark.parametrize("command", [["revoke", "t"], ["revoke-instance", "u"], ["list"], ["sessions"], ["kill", "s"], ["create", "--host", "h", "--port", "1"]])
def test_every_command_that_prints_takes_a_format(command: list[str]) -> None:
    """-f table|json|value is accepted by every command, and table is the default."""
    for fmt in ("table", "json", "value"):
        assert cli.parse_args(["console", *command, "-f", fmt]).format == fmt
    assert cli.parse_args(["console", *command]).format == "table"
    with pytest.raises(SystemExit):
        cli.parse_args(["console", *command, "-f", "yaml"])


@pytest_twisted.ensureDeferred
async def test_a_field_some_records_lack_is_null(api: Api, tmp_path) -> None:
    """-c unix_path lists a host:port token's missing unix_path as null, not as an error."""
    await api.mint(instance_uuid="u-1")
    ran = await api.run("console", "list", "-f", "json", "-c", "unix_path", "-c", "host")
    assert json.loads(ran.out) == [{"unix_path": None, "host": "127.0.0.1"}]
    ran = await api.run("console", "list", "-f", "value", "-c", "unix_path", "-c", "nothing")
    assert ran.status == cli.USAGE and "-c nothing: no such field" in ran.err
