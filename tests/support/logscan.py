"""
The end-of-session check that no secret reached any twistd log.

Every test that runs C{twistd txvnc} keeps its output in a C{twistd*.log}
file under pytest's base temporary directory. After the whole suite, those
logs must hold none of:

- the contents of any key file there (API keys, the secret key that seals
  VNC passwords at rest);
- a VNC password the tests used, or any other secret a test registered in
  L{SECRETS} (every token minted through L{tests.support.twistd});
- anything shaped like an unredacted token: C{token=}, a JSON C{"token":}
  or C{/v1/tokens/} followed by a long URL-safe string (the logs write
  C{~<hash>} instead).

Each is looked for in the line as written and in the line as a URL or a
JSON log would carry it decoded ("views"): percent-decoded once and twice
(a browser's C{path=websockify%3Ftoken%3D...}, a proxy's re-encoding),
with C{+} as a space, and JSON-unescaped. A registered secret is found
wherever it stands, not only after C{token=}: in a cookie, an API path, a
Referer, a message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, unquote_plus

#: Secrets registered by tests (minted tokens, passwords, keys).
SECRETS: set[str] = set()

UNREDACTED = re.compile(
    r"""(?i)(?:token=|"token":\s*"|/v1/tokens/)(?!~)([A-Za-z0-9_-]{20,})"""
)
#: A JSON string escape (C{\"}, C{\\}, C{\/}, C{\u0021}).
_JSON_ESCAPE = re.compile(r'\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])')


def _json_unescape(match: re.Match[str]) -> str:
    decoded: str = json.loads(f'"{match.group(0)}"')
    return decoded


def views(line: str, plus: bool = False) -> set[str]:
    """
    C{line} and each decoding of it a secret could hide behind (the
    percent-decodings only where there is a C{%} to decode; C{+} as a
    space only when C{plus}, since every log line's time zone has one).
    """
    seen = {line}
    if "\\" in line:
        seen.add(_JSON_ESCAPE.sub(_json_unescape, line))
    for text in list(seen):
        if "%" in text:
            once = unquote(text)
            seen.update({once, unquote(once)})
        if plus and "+" in text:
            seen.add(unquote_plus(text))
    return seen


class Scanner:
    """
    Looks for C{secrets} (those of 6 characters or more) and for unredacted
    tokens in log lines.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = {s for s in secrets if len(s) >= 6}
        self._plus = any(" " in s for s in self.secrets)

    def exposes(self, line: str) -> str | None:
        """
        What C{line} shows, by kind: "a secret", "an unredacted token", or
        L{None}.
        """
        seen = views(line, self._plus)
        if any(secret in text for text in seen for secret in self.secrets):
            return "a secret"
        if any(UNREDACTED.search(text) for text in seen):
            return "an unredacted token"
        return None


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
    scanner = Scanner([*secrets, *key_files(base)])
    found = []
    for log in sorted(base.rglob(logs)):
        text = log.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            kind = scanner.exposes(line)
            if kind is not None:
                found.append(f"{log}:{number}: {kind}")
    return found
