"""
API keys and their roles.

Callers present a key as C{Authorization: Bearer KEY}. Each key has roles:
C{admin} (mint, list, revoke, see and kill consoles) and C{proxy} (check and
use tokens, follow the revocation feed, report consoles). The keys file
holds one key a line::

    # comments and blank lines are ignored
    admin  K8x...          # the control plane's key
    admin  Qz1...          # its next key, during a rotation
    proxy  Wd4...          # what the console proxies present
    admin,proxy  Lm9...    # one key with both roles
    Pa7...                 # a bare key (the old single-key file): both roles

Several keys may hold a role at once, so a key is rotated by adding the new
one, reloading (C{SIGHUP}), moving the callers over, removing the old one and
reloading again; open consoles are never touched by a reload.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass

from twisted.logger import Logger

_log = Logger()

KEY_BYTES = 32
ADMIN = "admin"
PROXY = "proxy"
ROLES = (ADMIN, PROXY)
#: What the messages call the files read here: the API key file, unless
#: told otherwise (the secret key file that seals VNC passwords is read the
#: same way).
API_KEY_FILE = "API key file"
SECRET_KEY_FILE = "secret key file"
#: The shortest key a serving process accepts: anything shorter is a word,
#: not a secret (the keys txvnc makes itself have 43 characters).
MIN_KEY_LENGTH = 16
_COMMENT = re.compile(r"(^|\s)#.*$")


class KeyFileError(Exception):
    """
    The key file exists but cannot be used; the message says why (and never
    quotes a key).
    """


@dataclass(frozen=True)
class ApiKey:
    key: str
    roles: frozenset[str]


def parse_keys(
    text: str, path: str, what: str = API_KEY_FILE
) -> tuple[ApiKey, ...]:
    """
    The keys of a keys file's text; C{what} names the file in messages.

    @raise KeyFileError: naming the line that is wrong, or an empty file.
    """
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        # A comment starts a line or follows white space; a key may hold '#'.
        words = _COMMENT.sub("", raw).split()
        if not words:
            continue
        if len(words) == 1:
            keys.append(ApiKey(words[0], frozenset(ROLES)))
            continue
        if len(words) != 2:
            raise KeyFileError(f"{what} {path} line {number}: expected ROLE KEY")
        roles = frozenset(r.strip() for r in words[0].split(","))
        if not roles <= set(ROLES):
            # Not quoted: a line written KEY ROLE would put the key here.
            raise KeyFileError(
                f"{what} {path} line {number}: unknown role "
                "(use admin, proxy or admin,proxy)"
            )
        keys.append(ApiKey(words[1], roles))
    if not keys:
        raise KeyFileError(f"{what} {path} is empty")
    return tuple(keys)


def read_keys(path: str, what: str = API_KEY_FILE) -> tuple[ApiKey, ...]:
    """
    The keys in the file at C{path}.

    @raise KeyFileError: when it is missing, unreadable, empty or malformed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {what} {path}: {e.strerror}") from None
    return parse_keys(text, path, what)


def check_private(path: str, what: str = API_KEY_FILE) -> None:
    """
    Refuse a key file that users other than its owner (its group included)
    may read or write, as ssh refuses an open private key: whoever reads
    the API key mints consoles, whoever reads the secret key opens the
    stored VNC passwords.

    @raise KeyFileError: naming the file, its mode and the fix.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # reading the file says what is wrong with it
    if mode & 0o077:
        raise KeyFileError(
            f"{what} {path} is open to other users (mode {mode:04o}): "
            f"run chmod 600 {path}"
        )


def check_long_enough(
    keys: tuple[ApiKey, ...], path: str, what: str = API_KEY_FILE
) -> None:
    """
    Refuse keys too short to be secret. The message gives the length only:
    never the key.

    @raise KeyFileError: naming the file.
    """
    for k in keys:
        if len(k.key) < MIN_KEY_LENGTH:
            raise KeyFileError(
                f"{what} {path} holds a key of {len(k.key)} characters, too "
                f"short to be secret: use at least {MIN_KEY_LENGTH} characters "
                "(txvnc's own keys have 43)"
            )


def read_private_keys(path: str, what: str = API_KEY_FILE) -> tuple[ApiKey, ...]:
    """
    The keys in C{path} for a process that serves with them: well formed
    (L{read_keys}), private to their owner (L{check_private}) and long
    enough (L{check_long_enough}).
    """
    keys = read_keys(path, what)
    check_private(path, what)
    check_long_enough(keys, path, what)
    return keys


def key_with_role(
    keys: tuple[ApiKey, ...], role: str, path: str, what: str = API_KEY_FILE
) -> str:
    """
    The first key holding C{role}.

    @raise KeyFileError: when no key holds it.
    """
    for k in keys:
        if role in k.roles:
            return k.key
    raise KeyFileError(f"{what} {path} has no {role} key")


def read_key_file(path: str, role: str = ADMIN, what: str = API_KEY_FILE) -> str:
    """
    The first key with C{role} in C{path}.
    """
    return key_with_role(read_keys(path, what), role, path, what)


def load_or_create_key_file(
    path: str, role: str = ADMIN, what: str = API_KEY_FILE
) -> str:
    """
    Read the key from C{path}, creating the file with a fresh random key
    (both roles) and mode 0600 when it does not exist, so a first start
    needs no set-up and the key never has to pass through a command line or
    an environment.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key_file(path, role, what)
    except OSError as e:
        raise KeyFileError(f"cannot create {what} {path}: {e.strerror}") from None
    key = secrets.token_urlsafe(KEY_BYTES)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    _log.info(
        "created {what} {path} (mode 0600)", what=what, path=os.path.abspath(path)
    )
    return key


def bearer_matches(authorization: bytes | None, key: str) -> bool:
    """
    Whether an C{Authorization} header carries C{key}, compared in constant
    time so the answer's timing leaks nothing about the key.
    """
    presented = _bearer(authorization)
    return presented is not None and hmac.compare_digest(presented, key.encode("utf-8"))


def _bearer(authorization: bytes | None) -> bytes | None:
    if not authorization:
        return None
    scheme, _, presented = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return presented.strip()


class KeyRing:
    """
    The keys the token API accepts, reloadable from their file.

    @ivar path: the keys file, or L{None} for a fixed set (tests).
    @ivar private: whether the file is held to L{read_private_keys} (a
        serving process's keys), on reloads as at start-up.
    """

    _log = Logger()

    def __init__(
        self,
        keys: tuple[ApiKey, ...],
        path: str | None = None,
        private: bool = False,
    ) -> None:
        self.keys = keys
        self.path = path
        self.private = private

    @classmethod
    def single(cls, key: str) -> KeyRing:
        """
        One key with every role: the old single-key configuration.
        """
        return cls((ApiKey(key, frozenset(ROLES)),))

    @classmethod
    def from_file(cls, path: str, private: bool = False) -> KeyRing:
        """
        The keys in C{path}; with C{private}, held to L{read_private_keys}.
        """
        return cls(_read(path, private), path, private)

    def roles(self, authorization: bytes | None) -> frozenset[str] | None:
        """
        The roles of the key in an C{Authorization} header, or L{None} when
        it carries no valid key. Every key is compared, in constant time, so
        the timing tells nothing about which key nearly matched.
        """
        presented = _bearer(authorization)
        if presented is None:
            return None
        found: frozenset[str] | None = None
        for k in self.keys:
            if hmac.compare_digest(presented, k.key.encode("utf-8")):
                found = k.roles if found is None else found | k.roles
        return found

    def key_for(self, role: str) -> str:
        """
        The first key holding C{role}, for this process's own calls.

        @raise KeyFileError: when none does.
        """
        return key_with_role(self.keys, role, self.path or "the key ring")

    def reload(self) -> bool:
        """
        Read the file again. A file that cannot be used leaves the old keys
        in force (and says why), so a typo during a rotation locks no one out.
        """
        if self.path is None:
            return False
        try:
            keys = _read(self.path, self.private)
        except KeyFileError as e:
            self._log.error(
                "API keys not reloaded, the old ones stay in force: {why}", why=str(e)
            )
            return False
        self.keys = keys
        self._log.info(
            "API keys reloaded from {path}: {admin} admin, {proxy} proxy",
            path=self.path,
            admin=sum(ADMIN in k.roles for k in keys),
            proxy=sum(PROXY in k.roles for k in keys),
        )
        return True


def _read(path: str, private: bool) -> tuple[ApiKey, ...]:
    return read_private_keys(path) if private else read_keys(path)
