"""
Start-up failures an operator fixes by changing an option, said in one line.

twistd prints a usage error after its whole help text, and an exception
raised while the services start (a port someone else holds) as a traceback
of some forty lines through its log. A L{StartupError} carries the option,
the value and what is wrong; L{report_in_one_line} makes an uncaught one
end the process with that line on stderr and exit status 1 (and twistd,
daemonizing, hands its message to the parent as for any exception).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO


class StartupError(Exception):
    """
    txvnc cannot start as configured; the message names the option and its
    value and says what is wrong.
    """


def say(message: str, stream: TextIO | None = None) -> None:
    """
    Write C{twistd txvnc: MESSAGE} to the process's own stderr (twistd
    sends C{sys.stderr} to its log once logging starts).
    """
    out = stream or sys.__stderr__
    if out is not None:
        out.write(f"twistd txvnc: {message}\n")
        out.flush()


def report_in_one_line() -> None:
    """
    From now on, a L{StartupError} nobody catches is one line on stderr,
    not a traceback; any other exception is reported as before.
    """
    previous = sys.excepthook

    def hook(
        kind: type[BaseException],
        value: BaseException,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(value, StartupError):
            say(str(value))
        else:
            previous(kind, value, traceback)

    sys.excepthook = hook
