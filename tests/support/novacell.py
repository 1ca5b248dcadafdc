"""
nova cell databases for the tests, two ways:

- L{NovaCell}: the real thing. nova's own code, in nova's own environment
  (C{tests/nova/.venv}, which C{make test} makes from
  C{tests/nova/requirements.txt}), runs C{tests/nova/mint.py}: nova's
  migrations make the database, C{ConsoleAuthToken.authorize} mints,
  C{clean_console_auths_for_instance} cleans, C{instance_destroy} deletes.
  txvnc's environment never imports nova.
- L{CellDB}: without nova, for the store's own tests: the two tables the
  nova store reads, with nova's names and column types, in a SQLite file,
  written the way nova's code writes them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import spawn
from tests.support.twistd import Twistd, start_twistd

REPO = Path(__file__).resolve().parents[2]
NOVA_PYTHON = REPO / "tests" / "nova" / ".venv" / "bin" / "python"
MINT = REPO / "tests" / "nova" / "mint.py"


def write_nova_conf(path: Path, connection: str, **sections: dict[str, str]) -> Path:
    """
    A nova.conf with C{[database] connection} and any other C{sections}
    (C{vnc={"novncproxy_port": "6080"}}), C{[DEFAULT]} first.
    """
    every: dict[str, dict[str, str]] = {"DEFAULT": {}, **sections}
    every["database"] = {**every.get("database", {}), "connection": connection}
    lines = []
    for section, values in every.items():
        lines.append(f"[{section}]")
        lines += [f"{name} = {value}" for name, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class NovaCell:
    """
    nova's code for one cell (C{nova_conf}'s database), one command at a
    time over a pipe to C{tests/nova/mint.py}; L{close} ends it.
    """

    def __init__(self, nova_conf: Path) -> None:
        if not NOVA_PYTHON.exists():
            pytest.fail(
                f"nova's environment is missing ({NOVA_PYTHON}): "
                "make tests/nova/.venv/.installed"
            )
        self.nova_conf = nova_conf
        self._log = open(nova_conf.parent / "nova-mint.log", "ab")
        self.process = spawn(
            [str(NOVA_PYTHON), str(MINT), str(nova_conf)],
            cwd=nova_conf.parent,
            stdin=True,
            stderr=self._log.fileno(),
        )
        assert self._answer() == "ready"

    def _answer(self) -> Any:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(
                    "nova's mint.py ended; see nova-mint.log beside nova.conf"
                )
            if line.startswith("ok "):
                return json.loads(line[3:])
            if line.startswith("error "):
                raise AssertionError("nova: " + json.loads(line[6:]))

    def call(self, *words: object) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def migrate(self) -> None:
        self.call("migrate")

    def add_instance(self) -> str:
        return str(self.call("instance"))

    def mint(self, instance: str, host: str, port: int, ttl: int, base: str) -> dict:
        """
        A novnc console of C{instance}: nova's token and access URL.
        """
        return dict(self.call("token", instance, host, port, ttl, base))

    def clean_instance(self, instance: str) -> None:
        self.call("clean", instance)

    def delete_instance(self, instance: str) -> None:
        self.call("delete", instance)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()

_SCHEMA = """
CREATE TABLE instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid VARCHAR(36) NOT NULL UNIQUE,
    deleted INTEGER DEFAULT 0,
    created_at DATETIME
);
CREATE TABLE console_auth_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at DATETIME,
    updated_at DATETIME,
    token_hash VARCHAR(255) NOT NULL UNIQUE,
    console_type VARCHAR(255) NOT NULL,
    host VARCHAR(255) NOT NULL,
    port INTEGER NOT NULL,
    tls_port INTEGER,
    internal_access_path VARCHAR(255),
    instance_uuid VARCHAR(36) NOT NULL,
    expires INTEGER NOT NULL,
    access_url_base VARCHAR(255)
);
"""


class CellDB:
    """
    A cell database file at C{path}, created when missing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def add_instance(self) -> str:
        instance = str(uuid.uuid4())
        with self._connect() as db:
            db.execute(
                "INSERT INTO instances (uuid, deleted, created_at) VALUES (?, 0, ?)",
                (instance, _now_text()),
            )
        return instance

    def mint(
        self,
        instance: str,
        expires: float,
        host: str = "127.0.0.1",
        port: int = 5900,
        console_type: str = "novnc",
    ) -> str:
        """
        A new token, stored as nova's C{ConsoleAuthToken.authorize} does.
        """
        token = str(uuid.uuid4())
        with self._connect() as db:
            db.execute(
                "INSERT INTO console_auth_tokens (created_at, token_hash,"
                " console_type, host, port, instance_uuid, expires,"
                " access_url_base) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _now_text(),
                    hashlib.sha256(token.encode()).hexdigest(),
                    console_type,
                    host,
                    port,
                    instance,
                    int(expires),
                    "http://127.0.0.1:6080/vnc_lite.html",
                ),
            )
        return token

    def clean_instance(self, instance: str) -> None:
        """
        nova's C{clean_console_auths_for_instance}.
        """
        with self._connect() as db:
            db.execute(
                "DELETE FROM console_auth_tokens WHERE instance_uuid = ?", (instance,)
            )

    def delete_instance(self, instance: str) -> None:
        """
        nova's soft delete: C{deleted} becomes the row's id.
        """
        with self._connect() as db:
            db.execute("UPDATE instances SET deleted = id WHERE uuid = ?", (instance,))


def _now_text() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(" ")


#: Seconds the proxy waits for the token API (and the API, 80% of it, for
#: nova's database).
CHECK_TIMEOUT = 2.0


@dataclass
class Nova:
    """
    One cell: its nova.conf and database, nova's code, txvnc serving it.
    """

    directory: Path
    conf: Path
    db: Path
    cell: NovaCell
    txvnc: Twistd

    def mint(self, instance: str, port: int, ttl: int = 600) -> dict:
        """
        nova's token and access URL for a console of C{instance} on the
        loopback VNC server at C{port}; the token is a secret no log holds.
        """
        minted = self.cell.mint(
            instance, "127.0.0.1", port, ttl, f"{self.txvnc.base_url}/vnc_lite.html"
        )
        self.txvnc.remember(minted["token"])
        return minted


def serve_nova(directory: Path, connection: str | None = None) -> Iterator[Nova]:
    """
    A cell database migrated by nova (SQLite in C{directory}, or the one
    C{connection} names) and txvnc on it, for a fixture.
    """
    db = directory / "nova.sqlite"
    conf = write_nova_conf(
        directory / "nova.conf",
        connection or f"sqlite:///{db}",
        # nova's recording, into a directory that is not there: an option
        # txvnc names once as not honoured (a real one records every console).
        DEFAULT={"record": str(directory / "missing" / "console.rec")},
        vnc={"auth_schemes": "none"},
    )
    cell = NovaCell(conf)
    try:
        cell.migrate()
        server = start_twistd(
            directory,
            "--nova-config", str(conf),
            "--token-check-timeout", str(CHECK_TIMEOUT),
            "--revocation-poll-interval", "0.5",
            store=None,
        )  # fmt: skip
        yield Nova(directory, conf, db, cell, server)
        server.stop()
    finally:
        cell.close()
