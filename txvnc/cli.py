"""
The C{txvnc} command: ask the token API for consoles, like
C{nova get-vnc-console}, and revoke them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from txvnc import __version__
from txvnc.client import (
    ConsoleAuthClient,
    ConsoleAuthError,
    ConsoleAuthUnavailable,
    pooled_http_client,
)
from txvnc.consoleauth.keys import KeyFileError, read_key_file
from txvnc.consoleauth.tokens import CLIPBOARD_MODES, SECURITY_MODES

DEFAULT_API_URL = "http://127.0.0.1:6081"

#: Exit statuses (README, "The txvnc command"): scripts tell them apart.
OK = 0
#: The token API refused the request (a bad value, a wrong key, a role).
REFUSED = 1
#: The command line is wrong, or a key or password file cannot be read.
USAGE = 2
#: The token API is unreachable, timed out or failed (5xx).
UNAVAILABLE = 3
#: The token to revoke is unknown, expired or used up.
NOT_FOUND = 4


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

    # No abbreviations: "--vnc-password PW" must not pass for --vnc-password-file.
    create = sub.add_parser(
        "create", help="mint a console token, print its URL", allow_abbrev=False
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

    revoke = sub.add_parser("revoke", help="revoke one token")
    revoke.add_argument(
        "token", help='the token; one starting with "-" goes after "--"'
    )
    revoke_instance = sub.add_parser(
        "revoke-instance", help="revoke every token of an instance"
    )
    revoke_instance.add_argument("instance_uuid")
    listing = sub.add_parser("list", help="list live tokens (never the tokens)")
    listing.add_argument("--instance-uuid", help="only this instance's tokens")
    sessions = sub.add_parser("sessions", help="list open consoles on every proxy")
    sessions.add_argument("--instance-uuid", help="only this instance's consoles")
    kill = sub.add_parser("kill", help="close one open console")
    kill.add_argument("session_id")
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
    client: ConsoleAuthClient, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
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
        )
        print(
            table(["Type", "Url"], [[answer["console_type"], answer["access_url"]]]),
            file=out,
        )
    elif args.action == "revoke":
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
        print("Token revoked.", file=out)
    elif args.action == "revoke-instance":
        await client.revoke_instance(args.instance_uuid)
        print(f"Every token of instance {args.instance_uuid} revoked.", file=out)
    elif args.action == "list":
        tokens = await client.list_tokens(args.instance_uuid)
        rows = [
            [
                t["token_hash"][:12],
                str(t["instance_uuid"] or "-"),
                t.get("unix_path") or f"{t['host']}:{t['port']}",
                "yes" if t["single_use"] else "no",
                t["expires_at"],
            ]
            for t in tokens
        ]
        print(
            table(["Token hash", "Instance", "Target", "Single use", "Expires"], rows),
            file=out,
        )
    elif args.action == "sessions":
        found = await client.list_sessions(args.instance_uuid)
        rows = [
            [
                s["id"],
                s["proxy"],
                str(s["instance_uuid"] or "-"),
                s["client"],
                s["target"],
                s["opened_at"],
                str(s["bytes_to_vnc"]),
                str(s["bytes_from_vnc"]),
            ]
            for s in found
        ]
        headers = ["Id", "Proxy", "Instance", "Client", "Target", "Opened"]
        print(table([*headers, "To VNC", "From VNC"], rows), file=out)
    elif args.action == "kill":
        await client.kill_session(args.session_id)
        print(f"Console {args.session_id} will be closed.", file=out)
    return OK


async def execute(
    client: ConsoleAuthClient, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """
    Run the command C{args} names against the token API; its exit status.
    Results go to C{out}, errors to C{err} as one line each, never a
    traceback.
    """
    try:
        return await _command(client, args, out, err)
    except ConsoleAuthUnavailable as e:
        print(f"txvnc: {e} ({args.api_url})", file=err)
        return UNAVAILABLE
    except ConsoleAuthError as e:
        hint = " (check the API key)" if e.status == 401 else ""
        print(f"txvnc: the token API refused: {e.message}{hint}", file=err)
        return REFUSED


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    The command line checked, the API key and the VNC password read; a
    mistake ends the program with a message and L{USAGE}.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.action == "create" and args.host is not None and args.port is None:
        parser.error("--host needs --port")
    if args.action == "create" and args.unix_path is not None and args.port:
        parser.error("--unix-path takes no --port")
    try:
        args.api_key = _api_key(args)
    except KeyFileError as e:
        print(f"txvnc: {e} (set TXVNC_API_KEY or --api-key-file)", file=sys.stderr)
        raise SystemExit(USAGE) from None
    try:
        args.vnc_password = _vnc_password(args) if args.action == "create" else None
    except KeyFileError as e:
        print(f"txvnc: {e}", file=sys.stderr)
        raise SystemExit(USAGE) from None
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    async def run(reactor: Any) -> None:
        client = ConsoleAuthClient(
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
