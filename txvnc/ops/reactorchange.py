"""
A change made to the reactor instance for as long as a service runs.

txvnc replaces a few methods of Twisted's reactor instance (the loop's
turn, the epoll dispatch, the spinning poller): each is made when its
service starts, so a reactor is left as Twisted made it until the
application runs, and undone when the service stops, so a test's reactor
(or the next C{run}) gets Twisted's own back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service


class ReactorChange(Service):
    """C{install()} when the service starts, C{uninstall()} when it stops."""

    def __init__(
        self, install: Callable[[], object], uninstall: Callable[[], object]
    ) -> None:
        self._install = install
        self._uninstall = uninstall

    def startService(self) -> None:
        super().startService()
        self._install()

    def stopService(self) -> Any:
        self._uninstall()
        return super().stopService()
