"""
The C{txvnc} command: ask the token API for consoles, like
C{nova get-vnc-console}, and revoke them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from txvnc.client import (
    ConsoleAuthClient,
    ConsoleAuthError,
    ConsoleAuthUnavailable,
    pooled_http_client,
)
from txvnc.consoleauth.keys import KeyFileError, read_key_file

DEFAULT_API_URL = "http://127.0.0.1:6081"


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

    create = sub.add_parser("create", help="mint a console token, print its URL")
    create.add_argument("--host", required=True, help="VNC server host")
    create.add_argument("--port", required=True, type=int, help="VNC server port")
    create.add_argument("--instance-uuid", help="instance the console belongs to")
    create.add_argument("--ttl", type=int, help="token lifetime in seconds")
    create.add_argument(
        "--console-type", default="novnc", help="console type [default: novnc]"
    )

    revoke = sub.add_parser("revoke", help="revoke one token")
    revoke.add_argument("token")
    revoke_instance = sub.add_parser(
        "revoke-instance", help="revoke every token of an instance"
    )
    revoke_instance.add_argument("instance_uuid")
    return parser


def _api_key(args: argparse.Namespace) -> str:
    key = os.environ.get("TXVNC_API_KEY", "").strip()
    if key:
        return key
    return read_key_file(args.api_key_file)


async def _run(reactor: Any, args: argparse.Namespace, key: str) -> int:
    client = ConsoleAuthClient(
        pooled_http_client(reactor), args.api_url, key, reactor, timeout=args.timeout
    )
    if args.action == "create":
        answer = await client.create_token(
            args.host,
            args.port,
            instance_uuid=args.instance_uuid,
            ttl=args.ttl,
            console_type=args.console_type,
        )
        print(table(["Type", "Url"], [[answer["console_type"], answer["access_url"]]]))
    elif args.action == "revoke":
        await client.revoke_token(args.token)
        print("Token revoked.")
    elif args.action == "revoke-instance":
        await client.revoke_instance(args.instance_uuid)
        print(f"Every token of instance {args.instance_uuid} revoked.")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        key = _api_key(args)
    except KeyFileError as e:
        print(f"txvnc: {e} (set TXVNC_API_KEY or --api-key-file)", file=sys.stderr)
        raise SystemExit(2) from None

    async def run(reactor: Any) -> None:
        try:
            code = await _run(reactor, args, key)
        except ConsoleAuthUnavailable as e:
            print(f"txvnc: {e} ({args.api_url})", file=sys.stderr)
            code = 3
        except ConsoleAuthError as e:
            hint = " (check the API key)" if e.status == 401 else ""
            print(f"txvnc: the token API refused: {e.message}{hint}", file=sys.stderr)
            code = 1
        if code:
            raise SystemExit(code)

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
