"""
The end-of-session check that no secret reached any twistd log.

Every test that runs C{twistd txvnc} keeps its output in a C{twistd*.log}
file under pytest's base temporary directory. After the whole suite, those
logs must hold none of:

- the contents of any key file there (API keys, the secret key that seals
  VNC passwords at rest);
- a VNC password the tests used, or any other secret a test registered in
  L{SECRETS};
- anything shaped like an unredacted token: C{token=} or C{token%3D}
  followed by a long URL-safe string, or C{/v1/tokens/} followed by one
  (the access log writes C{~<hash>} instead).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

#: Secrets registered by tests (minted tokens, passwords, keys).
SECRETS: set[str] = set()

UNREDACTED = re.compile(
    r"(?i)(?:token(?:=|%3D)|/v1/tokens/)(?!~)([A-Za-z0-9_-]{20,})"
)


def key_files(base: Path) -> Iterable[str]:
    for path in base.rglob("*.key"):
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            yield text


def leaks(base: Path, secrets: Iterable[str], logs: str = "twistd*.log") -> list[str]:
    """
    One line per secret found in a twistd log under C{base}, naming the log
    and the kind of secret, never the secret itself.
    """
    wanted = {s for s in [*secrets, *key_files(base)] if len(s) >= 6}
    found = []
    for log in sorted(base.rglob(logs)):
        text = log.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if any(secret in line for secret in wanted):
                found.append(f"{log}:{number}: a secret")
            elif UNREDACTED.search(line):
                found.append(f"{log}:{number}: an unredacted token")
    return found
