"""
A nova cell made by nova's own code (tests/nova/mint.py in nova's own
environment) and a C{twistd txvnc --nova-config} serving its consoles.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mariadb import MariaDB
from tests.support.novacell import Nova, serve_nova


@pytest.fixture(scope="module")
def nova(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nova]:
    yield from serve_nova(tmp_path_factory.mktemp("nova"))


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """
    A real MariaDB (Debian's mariadb-server) on loopback, for the module.
    """
    server = MariaDB(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nova_mysql(
    tmp_path_factory: pytest.TempPathFactory, mariadb: MariaDB
) -> Iterator[Nova]:
    """
    A cell whose database is on MariaDB, as in production: nova's
    migrations made it, txvnc reads it with pymysql.
    """
    connection = mariadb.create_database("nova_cell1", "nova", "nova-db-pw")
    yield from serve_nova(tmp_path_factory.mktemp("nova-mysql"), connection)
