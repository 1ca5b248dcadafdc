"""
What the proxy reports about its consoles, for metrics: a small interface
the relay calls at each step, whose default does nothing, so the relay
never depends on a metrics library.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class TokenCheck:
    """
    One token check in progress; the relay sets C{result} to C{"valid"} or
    C{"invalid"} when the API answers, and leaves C{"error"} otherwise.
    """

    def __init__(self) -> None:
        self.result = "error"


class ConsoleEvents:
    """
    Receives the proxy's console events; this base ignores them.
    """

    def handshake_refused(self, status: int) -> None:
        """
        A WebSocket upgrade was refused with HTTP C{status}.
        """

    def console_ended(self, outcome: str, opened: bool) -> None:
        """
        A console request ended: C{outcome} says how (C{"ok"},
        C{"bad_token"}, C{"idle_timeout"}...); C{opened} whether it ever
        reached the relay.
        """

    @contextmanager
    def token_check(self) -> Iterator[TokenCheck]:
        """
        Wraps one call to the token API.
        """
        yield TokenCheck()
