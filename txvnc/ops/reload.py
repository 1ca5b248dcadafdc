"""
One place for everything that reloads on SIGHUP (TLS certificates, key
files): parts register a callable, the signal runs them all, and one that
fails is logged without stopping the others or the service.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

_log = Logger()


class ReloadHooks:
    """
    Named reload callables, run in the order they were added.
    """

    def __init__(self) -> None:
        self._hooks: list[tuple[str, Callable[[], object]]] = []

    def add(self, name: str, hook: Callable[[], object]) -> None:
        self._hooks.append((name, hook))

    def names(self) -> list[str]:
        return [name for name, _ in self._hooks]

    def run(self) -> dict[str, bool]:
        """
        Run every hook; name -> whether it succeeded.
        """
        results: dict[str, bool] = {}
        for name, hook in self._hooks:
            try:
                hook()
            except Exception:
                _log.failure("reload of {what} failed; keeping the old one", what=name)
                results[name] = False
            else:
                _log.info("reloaded {what}", what=name)
                results[name] = True
        return results
