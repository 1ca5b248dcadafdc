"""
C{--config FILE}: every option of C{twistd txvnc} from a TOML file.

Keys are the long option names (C{idle-timeout}, or C{idle_timeout});
values are TOML strings, numbers, booleans (flags) and arrays (repeatable
options). The file is read before the command line, so the command line
wins. A key that is not an option, or a value of the wrong type, is a usage
error naming the file and the key; a number is read as the command line
reads it, so a fraction where a whole number goes is refused.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

from twisted.python import usage


def config_path(argv: Sequence[str]) -> str | None:
    """
    The file named by C{--config FILE} or C{--config=FILE} in C{argv}.
    """
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
    return None


def load_config(path: str) -> dict[str, Any]:
    """
    @raise usage.UsageError: when the file cannot be read or parsed.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"--config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"--config {path}: not valid TOML: {e}") from None


def apply_config(options: usage.Options, values: dict[str, Any], path: str) -> None:
    """
    Set C{options} from C{values} as if they had been given on the command
    line (before the real command line is parsed).
    """
    flags = {f[0] for f in getattr(options, "optFlags", [])}
    parameters = {p[0]: p for p in getattr(options, "optParameters", [])}
    for raw_key, value in values.items():
        key = raw_key.replace("_", "-")
        where = f"--config {path}: {raw_key}"
        if key == "config":
            raise usage.UsageError(f"{where}: a config file cannot name another")
        if key in flags:
            if not isinstance(value, bool):
                raise usage.UsageError(f"{where} must be true or false")
            options[key] = 1 if value else 0
        elif isinstance(options.get(key), list):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(
                isinstance(v, str) for v in value
            ):
                raise usage.UsageError(f"{where} must be a string or an array of them")
            options[key] = list(value)
        elif key in parameters:
            options[key] = _coerce(parameters[key], value, where)
        else:
            raise usage.UsageError(f"{where} is not a txvnc option")


def _coerce(parameter: Sequence[Any], value: Any, where: str) -> Any:
    coerce = parameter[4] if len(parameter) > 4 else None
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise usage.UsageError(f"{where} must be a single value")
    if coerce is None:
        if not isinstance(value, str):
            raise usage.UsageError(f"{where} must be a string")
        return value
    # Read as the command line reads it, from text: int(2.5) would quietly
    # make workers = 2.5 two workers, int("2.5") refuses.
    try:
        return coerce(value if isinstance(value, str) else str(value))
    except ValueError:
        kind = "a whole number" if coerce is int else "a number"
        raise usage.UsageError(f"{where}: {value!r} is not {kind}") from None
