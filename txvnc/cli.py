"""
The C{txvnc} command: ask the token API for consoles, like C{nova
get-vnc-console}, and revoke them; recordings in L{txvnc.clirecord}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from txvnc import __version__, clirecord
from txvnc.client import ConsoleAuthError, ConsoleAuthUnavailable, OperatorClient
from txvnc.consoleauth.keys import KeyFileError, read_key_file
from txvnc.consoleauth.tokens import CLIPBOARD_MODES, OPTION_FIELDS, SECURITY_MODES
from txvnc.core.tokens import token_hash
from txvnc.httppool import pooled_http_client
from txvnc.service.endpoints import EndpointError, check_http_url

DEFAULT_API_URL = "http://127.0.0.1:6081"

#: Exit statuses (docs/api.md, "The txvnc command"): scripts tell them apart.
OK = 0
#: The token API refused the request (a bad value, a wrong key, a role).
REFUSED = 1
#: The command line is wrong, or a key or password file cannot be read.
USAGE = 2
#: The token API is unreachable, timed out or failed (5xx).
UNAVAILABLE = 3
#: What the command names does not exist: a token unknown, expired or
#: used up (revoke), a console no proxy holds (kill).
NOT_FOUND = 4

#: Output formats, as OpenStack's client names them: a boxed table for
#: people, JSON for programs, bare values for shell scripts.
FORMATS = ("table", "json", "value")

#: The fields of what the commands that change something print (for
#: C{create}, the API's answer to C{POST /v1/tokens}): C{-c} is checked
#: against them before anything is changed. The listings' fields are the
#: API's, checked against its answer.
FIELDS = {
    "create": (
        *("token", "access_url", "expires_at"),
        *("instance_uuid", "console_type", "single_use"),
    ),
    "revoke": ("token_hash", "revoked"),
    "revoke-instance": ("instance_uuid", "revoked"),
    "kill": ("id", "closing"),
}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    A boxed table in the style of the nova client's output.
    """
    widths = [
        max(len(str(cell)) for cell in column)
        for column in zip(headers, *rows, strict=True)
    ]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))
            + " |"
        )

    return "\n".join([rule, line(headers), rule, *(line(r) for r in rows), rule])


def _cell(value: Any) -> str:
    """A value as a table shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _bare(value: Any) -> str:
    """A value as C{-f value} prints it: JSON's spelling of null and booleans."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class Column:
    """
    One column of a command's output: its table header, its value taken
    from one of the API's records, and how the table writes that value.
    """

    header: str
    value: Callable[[dict[str, Any]], Any]
    cell: Callable[[Any], str] = _cell

    @classmethod
    def of(cls, name: str, header: str | None = None, **kw: Any) -> Column:
        """The column showing the record's field C{name}."""
        return cls(header or name, lambda record: record.get(name), **kw)


@dataclass
class Result:
    """
    What a command has to show: the API's records and the columns its
    table shows of them.

    @ivar single: one object, not a list (JSON prints an object).
    @ivar message: the sentence the table format prints instead of a
        table (a command that did something rather than showed something).
    @ivar optional: fields that only some records have.
    """

    columns: list[Column]
    records: list[dict[str, Any]] = field(default_factory=list)
    single: bool = False
    message: str | None = None
    optional: tuple[str, ...] = ()


class UnknownField(ValueError):
    """
    C{-c} names a field that is not in the answer.
    """


def _unknown_field(names: Sequence[str], known: Sequence[str]) -> str | None:
    """The message for the first of C{names} not C{known}, if any."""
    for name in names:
        if name not in known:
            return f"-c {name}: no such field (fields: {', '.join(sorted(known))})"
    return None


def render(args: argparse.Namespace, result: Result, out: TextIO) -> None:
    """
    Print C{result} as C{-f} says, restricted to the fields C{-c} names.

    @raise UnknownField: when C{-c} names a field the records do not have
        (an optional one, such as a token's C{unix_path}, shows as null in a
        record without it).
    """
    names: list[str] = args.columns or []
    if result.records:
        known = set(result.optional).union(*result.records)
        problem = _unknown_field(names, list(known))
        if problem:
            raise UnknownField(problem)
    columns = [Column.of(name) for name in names] or result.columns
    if args.format == "json":
        records = [
            {name: r.get(name) for name in names} if names else r
            for r in result.records
        ]
        shown: Any = records[0] if result.single else records
        print(json.dumps(shown, indent=2), file=out)
    elif args.format == "value":
        for record in result.records:
            print(" ".join(_bare(c.value(record)) for c in columns), file=out)
    elif result.message is not None and not names:
        print(result.message, file=out)
    else:
        rows = [[c.cell(c.value(r)) for c in columns] for r in result.records]
        print(table([c.header for c in columns], rows), file=out)


def _target(token: dict[str, Any]) -> str:
    return token.get("unix_path") or f"{token['host']}:{token['port']}"


#: What each listing's table shows; C{-f json} shows every field.
TOKEN_COLUMNS = [
    Column.of("token_hash", "Token hash", cell=lambda h: h[:12]),
    Column.of("instance_uuid", "Instance"),
    Column("Target", _target),
    Column.of("single_use", "Single use"),
    Column.of("expires_at", "Expires"),
]
#: What only some tokens have (the VNC password never leaves the API).
TOKEN_OPTIONS = tuple(name for name in OPTION_FIELDS if not name.startswith("vnc_"))
SESSION_COLUMNS = [
    Column.of("id", "Id"),
    Column.of("proxy", "Proxy"),
    Column.of("instance_uuid", "Instance"),
    Column.of("client", "Client"),
    Column.of("target", "Target"),
    Column.of("opened_at", "Opened"),
    Column.of("bytes_to_vnc", "To VNC"),
    Column.of("bytes_from_vnc", "From VNC"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="txvnc", description="Manage txvnc console tokens."
    )
    parser.add_argument("--version", action="version", version=f"txvnc {__version__}")
    parser.add_argument(
        "--api-url",
        default=os.environ.get("TXVNC_API_URL", DEFAULT_API_URL),
        help="token API base URL (env TXVNC_API_URL) [default: %(default)s]",
    )
    parser.add_argument(
        "--api-key-file",
        default="txvnc-api.key",
        help="file holding the API key, used when TXVNC_API_KEY is not set "
        "[default: %(default)s]",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the API"
    )
    top = parser.add_subparsers(dest="group", required=True)
    console = top.add_parser("console", help="console tokens")
    sub = console.add_subparsers(dest="action", required=True)
    output = argparse.ArgumentParser(add_help=False)
    shown = output.add_argument_group("output")
    shown.add_argument(
        "-f", "--format", choices=FORMATS, default="table", help="output format"
    )
    shown.add_argument(
        "-c", "--column", dest="columns", action="append", metavar="FIELD",
        help="show only this field of the API's answer (repeatable, in order)",
    )  # fmt: skip

    # No abbreviations: "--vnc-password PW" must not pass for --vnc-password-file.
    create = sub.add_parser(
        "create",
        help="mint a console token, print its URL",
        allow_abbrev=False,
        parents=[output],
    )
    target = create.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", help="VNC server host (with --port)")
    target.add_argument(
        "--unix-path", help="VNC server unix socket, instead of --host and --port"
    )
    create.add_argument("--port", type=int, help="VNC server port")
    create.add_argument("--instance-uuid", help="instance the console belongs to")
    create.add_argument("--ttl", type=int, help="token lifetime in seconds")
    create.add_argument(
        "--single-use",
        action="store_true",
        help="the token opens one console, then is gone",
    )
    create.add_argument(
        "--console-type", default="novnc", help="console type [default: novnc]"
    )
    rfb = create.add_argument_group(
        "VNC security and policy (the proxy speaks RFB for the browser)"
    )
    rfb.add_argument(
        "--security",
        choices=SECURITY_MODES,
        help="how the proxy authenticates to the VNC server",
    )
    rfb.add_argument(
        "--vnc-password-file",
        help="file holding the VNC password (env TXVNC_VNC_PASSWORD); "
        "never on the command line",
    )
    rfb.add_argument(
        "--view-only",
        action="store_true",
        default=None,
        help="drop keyboard, pointer and clipboard input",
    )
    rfb.add_argument(
        "--clipboard", choices=CLIPBOARD_MODES, help="which way the clipboard flows"
    )
    sharing = rfb.add_mutually_exclusive_group()
    sharing.add_argument(
        "--shared",
        dest="shared",
        action="store_true",
        default=None,
        help="let other viewers stay connected",
    )
    sharing.add_argument(
        "--exclusive",
        dest="shared",
        action="store_false",
        help="ask the VNC server to disconnect other viewers",
    )

    revoke = sub.add_parser("revoke", help="revoke one token", parents=[output])
    revoke.add_argument(
        "token", help='the token; one starting with "-" goes after "--"'
    )
    revoke_instance = sub.add_parser(
        "revoke-instance", help="revoke every token of an instance", parents=[output]
    )
    revoke_instance.add_argument("instance_uuid")
    listing = sub.add_parser(
        "list", help="list live tokens (never the tokens)", parents=[output]
    )
    listing.add_argument("--instance-uuid", help="only this instance's tokens")
    sessions = sub.add_parser(
        "sessions", help="list open consoles on every proxy", parents=[output]
    )
    sessions.add_argument("--instance-uuid", help="only this instance's consoles")
    kill = sub.add_parser("kill", help="close one open console", parents=[output])
    kill.add_argument("session_id")
    clirecord.add_to(top, output, create)
    return parser


def _vnc_password(args: argparse.Namespace) -> str | None:
    if args.vnc_password_file:
        try:
            with open(args.vnc_password_file, encoding="utf-8") as f:
                return f.read().rstrip("\r\n") or None
        except OSError as e:
            raise KeyFileError(
                f"cannot read VNC password file {args.vnc_password_file}: {e.strerror}"
            ) from None
    return os.environ.get("TXVNC_VNC_PASSWORD") or None


def _api_key(args: argparse.Namespace) -> str:
    key = os.environ.get("TXVNC_API_KEY", "").strip()
    if key:
        return key
    return read_key_file(args.api_key_file)


async def _command(
    client: OperatorClient, args: argparse.Namespace, err: TextIO
) -> Result | int:
    """
    Ask the API what C{args} says; what to show, or an exit status when
    there is nothing to show.
    """
    if args.group == "recording":
        shown = await clirecord.command(client, args, err)
        columns = [Column.of(name, title) for name, title in shown.columns]
        return Result(columns, shown.records, shown.single, shown.message)
    if args.action == "create":
        answer = await client.create_token(
            args.host,
            args.port,
            instance_uuid=args.instance_uuid,
            ttl=args.ttl,
            console_type=args.console_type,
            unix_path=args.unix_path,
            security=args.security,
            vnc_password=args.vnc_password,
            view_only=args.view_only,
            clipboard=args.clipboard,
            shared=args.shared,
            single_use=args.single_use,
            **clirecord.record_options(args),
        )
        columns = [Column.of("console_type", "Type"), Column.of("access_url", "Url")]
        return Result(columns, [answer], single=True)
    if args.action == "revoke":
        # The API revokes any token (a console opened with a token that has
        # expired or was used up may still be open) and answers 204 either
        # way: ask first whether it is known, so that a mistyped token is
        # not reported revoked.
        try:
            known: bool | None = await client.check_token(args.token) is not None
        except ConsoleAuthUnavailable:
            known = None  # the revocation below says what is wrong
        await client.revoke_token(args.token)
        if known is False:
            print(
                "txvnc: token not found (unknown, expired or used up); revoked "
                "anyway, so a console still open with it closes",
                file=err,
            )
            return NOT_FOUND
        done = {"token_hash": token_hash(args.token), "revoked": True}
        return Result(
            [Column.of("token_hash"), Column.of("revoked")],
            [done],
            single=True,
            message="Token revoked.",
        )
    if args.action == "revoke-instance":
        await client.revoke_instance(args.instance_uuid)
        done = {"instance_uuid": args.instance_uuid, "revoked": True}
        return Result(
            [Column.of("instance_uuid"), Column.of("revoked")],
            [done],
            single=True,
            message=f"Every token of instance {args.instance_uuid} revoked.",
        )
    if args.action == "list":
        tokens = await client.list_tokens(args.instance_uuid)
        return Result(TOKEN_COLUMNS, tokens, optional=TOKEN_OPTIONS)
    if args.action == "sessions":
        found = await client.list_sessions(args.instance_uuid)
        return Result(SESSION_COLUMNS, found)
    await client.kill_session(args.session_id)
    return Result(
        [Column.of("id"), Column.of("closing")],
        [{"id": args.session_id, "closing": True}],
        single=True,
        message=f"Console {args.session_id} will be closed.",
    )


async def execute(
    client: OperatorClient, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """
    Run the command C{args} names against the token API; its exit status.
    Results go to C{out}, errors to C{err} as one line each, never a
    traceback.
    """
    try:
        result = await _command(client, args, err)
    except ConsoleAuthUnavailable as e:
        print(f"txvnc: {e} ({args.api_url})", file=err)
        return UNAVAILABLE
    except ConsoleAuthError as e:
        if e.status == 404:
            print(f"txvnc: not found: {e.message}", file=err)
            return NOT_FOUND
        hint = " (check the API key)" if e.status == 401 else ""
        print(f"txvnc: the token API refused: {e.message}{hint}", file=err)
        return REFUSED
    if isinstance(result, int):
        return result
    try:
        render(args, result, out)
    except UnknownField as e:
        print(f"txvnc: {e}", file=err)
        return USAGE
    return OK


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    The command line checked, the API key and the VNC password read; a
    mistake ends the program with a message and L{USAGE}.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    creating = args.group == "console" and args.action == "create"
    if creating and args.host is not None and args.port is None:
        parser.error("--host needs --port")
    if creating and args.unix_path is not None and args.port:
        parser.error("--unix-path takes no --port")
    problem = _unknown_field(args.columns or [], FIELDS.get(args.action, ()))
    if args.group == "console" and args.action in FIELDS and problem:
        parser.error(problem)
    try:
        check_http_url(args.api_url, "--api-url")
    except EndpointError as e:
        print(f"txvnc: {e}", file=sys.stderr)
        raise SystemExit(USAGE) from None
    try:
        args.api_key = _api_key(args)
    except KeyFileError as e:
        print(f"txvnc: {e} (set TXVNC_API_KEY or --api-key-file)", file=sys.stderr)
        raise SystemExit(USAGE) from None
    try:
        args.vnc_password = _vnc_password(args) if creating else None
    except KeyFileError as e:
        print(f"txvnc: {e}", file=sys.stderr)
        raise SystemExit(USAGE) from None
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    async def run(reactor: Any) -> None:
        client = OperatorClient(
            pooled_http_client(reactor),
            args.api_url,
            args.api_key,
            reactor,
            timeout=args.timeout,
        )
        code = await execute(client, args, sys.stdout, sys.stderr)
        if code:
            raise SystemExit(code)

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
