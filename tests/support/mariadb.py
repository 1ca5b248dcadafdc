"""
A real MariaDB for the tests: Debian's mariadb-server, a fresh data
directory made by mariadb-install-db in a temporary directory, listening on
127.0.0.1 and a free port (and a unix socket in that directory).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import listen_on_free_port, stop

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
MARIADB = shutil.which("mariadb") or "/usr/bin/mariadb"


class MariaDB:
    """
    One mariadbd process; L{create_database} makes a database and a user
    that may use it over TCP.
    """

    def __init__(self, directory: Path) -> None:
        for program in (MARIADBD, INSTALL_DB, MARIADB):
            if not Path(program).exists():
                pytest.fail(f"{program} is missing: scripts/system-deps test")
        self.directory = directory
        self.datadir = directory / "data"
        self.socket = directory / "mariadb.sock"
        subprocess.run(
            [
                INSTALL_DB, "--no-defaults", f"--datadir={self.datadir}",
                "--user=root", "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        server = listen_on_free_port(
            lambda port: [
                MARIADBD, "--no-defaults", "--user=root",
                f"--datadir={self.datadir}",
                "--bind-address=127.0.0.1", f"--port={port}",
                f"--socket={self.socket}",
                f"--pid-file={directory / 'mariadb.pid'}",
                "--skip-log-bin", "--innodb-buffer-pool-size=32M",
            ],
            "mariadbd",
            r"ready for connections",
            r"Bind on TCP/IP port|Address already in use",
            log_path=directory / "mariadb.log",
        )  # fmt: skip
        self.process = server.process
        self.port = server.port

    def sql(self, statements: str) -> None:
        """
        Run C{statements} as the database's root, over the unix socket.
        """
        subprocess.run(
            [MARIADB, "--no-defaults", f"--socket={self.socket}", "-u", "root"],
            input=statements, text=True, check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def create_database(self, name: str, user: str, password: str) -> str:
        """
        A database C{name} that C{user} owns; nova's connection URL for it.
        """
        self.sql(
            f"CREATE DATABASE {name};\n"
            f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';\n"
            f"GRANT ALL ON {name}.* TO '{user}'@'127.0.0.1';\n"
        )
        return (
            f"mysql+pymysql://{user}:{password}@127.0.0.1:{self.port}/{name}"
            "?charset=utf8"
        )

    def pause(self) -> None:
        """
        Freeze the server (SIGSTOP): connections hang, as behind a dead link.
        """
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        stop(self.process, must_obey=False)
