"""
Revocation as a person meets it: the console page in Chromium shows why its
console ended, and the C{txvnc} command lists and closes consoles.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest

from tests.support.twistd import Twistd
from txvnc.core.tokens import token_hash

from .conftest import VM
from .test_console import open_console

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

#: Milliseconds: the issue's 5 s, plus the page's own event handling.
STATUS_TIMEOUT_MS = 6_000


def wait_status(page: Any, pattern: str) -> str:
    page.wait_for_function(
        "(p) => new RegExp(p).test(document.getElementById('status').innerText)",
        arg=pattern,
        timeout=STATUS_TIMEOUT_MS,
        polling=50,
    )
    return page.locator("#status").inner_text()


def session_rows(txvnc: Twistd, instance: str, count: int) -> list[list[str]]:
    """
    The rows of C{txvnc console sessions} once it shows C{count} (the proxy
    reports a new console at its next poll of the API).
    """
    deadline = time.monotonic() + 15
    while True:
        result = txvnc.cli("console", "sessions", "--instance-uuid", instance)
        assert result.returncode == 0, result.stderr
        rows = [
            [cell.strip() for cell in line.strip("|").split("|")]
            for line in result.stdout.splitlines()[3:-1]
        ]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_revoked_console_page_shows_the_reason(
    page: Any, txvnc: Twistd, vm: VM
) -> None:
    """Revoking the instance with the CLI ends the open console; the page says access was revoked."""
    instance = str(uuid.uuid4())
    console = txvnc.create_console("127.0.0.1", vm.port, instance)
    state, text = open_console(page, console.url)
    assert state == "connected", text

    listing = txvnc.cli("console", "list", "--instance-uuid", instance)
    assert listing.returncode == 0, listing.stderr
    assert token_hash(console.token)[:12] in listing.stdout
    assert console.token not in listing.stdout

    started = time.monotonic()
    result = txvnc.cli("console", "revoke-instance", instance)
    assert result.returncode == 0, result.stderr
    text = wait_status(page, "revoked")
    assert time.monotonic() - started < 5 + 2  # the CLI's own start-up included
    assert text == "Disconnected: Console access was revoked."
    assert page.evaluate("document.body.dataset.closeCode") == "4001"


def test_killed_console_page_shows_the_reason(
    page: Any, txvnc: Twistd, vm: VM
) -> None:
    """A console listed by `txvnc console sessions` and closed with `kill` says an administrator closed it."""
    instance = str(uuid.uuid4())
    console = txvnc.create_console("127.0.0.1", vm.port, instance)
    state, text = open_console(page, console.url)
    assert state == "connected", text
    rows = session_rows(txvnc, instance, 1)
    assert len(rows) == 1, rows
    session_id, _proxy, listed_instance, client, target = rows[0][:5]
    assert listed_instance == instance
    assert re.fullmatch(r"127\.0\.0\.1:\d+", client)
    assert target == f"127.0.0.1:{vm.port}"
    result = txvnc.cli("console", "kill", session_id)
    assert result.returncode == 0, result.stderr
    text = wait_status(page, "administrator")
    assert text == "Disconnected: The console was closed by an administrator."
    assert page.evaluate("document.body.dataset.closeCode") == "4006"
    result = txvnc.cli("console", "kill", "req-no-such-console")
    assert result.returncode == 4  # not found (docs/api.md, exit statuses)
    assert "no such console session" in result.stderr
