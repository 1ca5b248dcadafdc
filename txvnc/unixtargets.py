"""
Unix socket targets (libvirt's per-domain VNC sockets): a token may name
one only under a directory the operator allows (C{--allowed-unix-dir}), the
unix-socket half of the target policy. Pure: the file system is not asked.
"""

from __future__ import annotations

import posixpath


def unix_path_allowed(path: str, allowed_dirs: tuple[str, ...]) -> bool:
    """
    Whether C{path} is an absolute, normalised path inside one of
    C{allowed_dirs}; no directory allowed means no unix target.
    """
    if not path.startswith("/") or posixpath.normpath(path) != path:
        return False
    for directory in allowed_dirs:
        directory = posixpath.normpath(directory)
        if path.startswith(directory.rstrip("/") + "/"):
            return True
    return False
