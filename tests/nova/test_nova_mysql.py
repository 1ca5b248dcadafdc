"""
The production form of a nova cell database: MariaDB, its tables made by
nova's migrations, its tokens minted by nova's code, read by txvnc with
pymysql (C{[database] connection = mysql+pymysql://...?charset=utf8}).
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.support.browser import connect_browser
from tests.support.mariadb import MariaDB
from tests.support.novacell import CHECK_TIMEOUT, Nova

from .test_nova_proxy import (
    REVOCATION_BOUND,
    handshake_status,
    opened,
    pause,
    token_check,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest_twisted.ensureDeferred
async def test_novas_tokens_on_mariadb(nova_mysql: Nova, vnc) -> None:
    """
    Valid opens, cleaned closes within 5 s with 4001, deleted-instance and
    unknown are refused.
    """
    nova = nova_mysql
    instance = nova.cell.add_instance()
    token = nova.mint(instance, vnc.address.port)["token"]
    assert (await token_check(nova, token))[:2] == (200, {"status": "valid"})
    browser = await connect_browser(nova.txvnc.proxy_port, f"token={token}", path="/")
    assert await opened(browser)
    started = time.monotonic()
    await deferToThread(nova.cell.clean_instance, instance)
    _, code, _ = await browser.closed
    assert code == 4001 and time.monotonic() - started < REVOCATION_BOUND
    assert await deferToThread(handshake_status, nova, f"/?token={token}") == 403
    doomed = nova.cell.add_instance()
    other = nova.mint(doomed, vnc.address.port)["token"]
    nova.cell.delete_instance(doomed)
    assert (await token_check(nova, other))[0] == 403


@pytest_twisted.ensureDeferred
async def test_mariadb_hanging_is_503_within_the_check_timeout(
    nova_mysql: Nova, mariadb: MariaDB, vnc
) -> None:
    """
    A database that stops answering (SIGSTOP: packets go nowhere) gives
    503 within the check timeout; it answers again, so does txvnc.
    """
    nova = nova_mysql
    token = nova.mint(nova.cell.add_instance(), vnc.address.port)["token"]
    mariadb.pause()
    try:
        status, _, took = await token_check(nova, token)
        assert status == 503 and took < CHECK_TIMEOUT + 0.5, (status, took)
    finally:
        mariadb.resume()
    deadline = time.monotonic() + 10
    while (status := (await token_check(nova, token))[0]) != 200:
        assert status == 503 and time.monotonic() < deadline, status
        await pause(0.2)
    nova.txvnc.log.wait_for(r"the store is unavailable: nova database")
