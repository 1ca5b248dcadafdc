"""
Where a token's C{unix_path} really leads: the file-system half of
C{--allowed-unix-dir}.

L{txvnc.core.targets.unix_path_allowed} judges the string, but a symbolic
link inside an allowed directory (planted by whoever may write there, or
left by a tool) leads to any socket on the host. So the token API (at
mint) and the proxy (at admission) resolve the path and judge the real
one, against the real paths of the allowed directories; the proxy then
connects to the resolved path and, right before connecting, checks that it
still has no link in it (L{still_real}), so a link swapped in after the
check does not redirect the console.

Resolving is a few local C{lstat}s: cheap enough for the reactor thread.
"""

from __future__ import annotations

import os

from txvnc.core.targets import unix_path_allowed


def real_unix_target(path: str, allowed_dirs: tuple[str, ...]) -> str | None:
    """
    The real path of C{path} when both the path as written and the path it
    resolves to are inside one of C{allowed_dirs} (each resolved too, so an
    allowed directory may itself be reached through a link, such as
    C{/var/run} to C{/run}); L{None} when either is not.
    """
    if not unix_path_allowed(path, allowed_dirs):
        return None
    real = os.path.realpath(path)
    real_dirs = tuple(os.path.realpath(d) for d in allowed_dirs)
    if not unix_path_allowed(real, real_dirs):
        return None
    return real


def still_real(path: str) -> bool:
    """
    Whether C{path} (a path L{real_unix_target} returned) still resolves
    to itself: no component has become a link since it was checked.
    """
    return os.path.realpath(path) == path
