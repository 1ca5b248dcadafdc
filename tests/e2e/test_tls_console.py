"""
The console over TLS in headless Chromium that trusts the test CA the way
a user's machine would: the CA is added to Chromium's NSS certificate
database (certutil, from libnss3-tools), not waved through with
--ignore-certificate-errors. A browser without the CA refuses the page.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.rfb.pki import make_pki
from tests.support.twistd import Twistd, start_twistd

from .conftest import CHROMIUM, CHROMIUM_ARGS
from .test_console import PAGE_TIMEOUT_MS, new_instance
from .test_console_page import TinyRFBServer, wait_state

pytestmark = pytest.mark.e2e


def nss_home(directory: Path, ca: Path | None) -> Path:
    """
    A home directory whose NSS database (what Chromium on Linux trusts
    besides its built-in roots) holds C{ca}, or nothing.
    """
    db = directory / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True
    )
    if ca is not None:
        subprocess.run(
            ["certutil", "-A", "-d", f"sql:{db}", "-n", "txvnc test CA", "-t", "C,,", "-i", str(ca)],
            check=True,
        )
    return directory


def start_tls_txvnc(directory: Path, key: Path, cert: Path) -> Twistd:
    """
    C{twistd txvnc} whose proxy listens with TLS, its access URLs on
    https://localhost (the certificate's name).
    """
    return start_twistd(
        directory,
        listen=f"ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        base_url="https://localhost:{port}",
    )


@pytest.fixture
def chromium_for(tmp_path: Path) -> Any:
    """
    Launch a Chromium whose HOME (and so NSS database) is the given one.
    """
    from playwright.sync_api import sync_playwright

    launched = []
    with sync_playwright() as playwright:

        def launch(home: Path) -> Any:
            env = {**os.environ, "HOME": str(home)}
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, env=env
            )
            launched.append(browser)
            return browser

        yield launch
        for browser in launched:
            browser.close()


def test_console_over_tls_in_a_browser_that_trusts_the_ca(
    tmp_path: Path, chromium_for: Any
) -> None:
    """Chromium trusting the test CA opens the https console (with HSTS); one without it refuses."""
    pki = make_pki(tmp_path)
    rfb = TinyRFBServer()
    server = start_tls_txvnc(tmp_path, pki.server_key, pki.server_cert)
    try:
        console = server.create_console("127.0.0.1", rfb.port, new_instance())
        assert console.url.startswith("https://localhost:")

        trusting = chromium_for(nss_home(tmp_path / "trusting", pki.ca_cert))
        page = trusting.new_page()
        response = page.goto(console.url)
        assert response is not None and response.status == 200
        assert response.headers["strict-transport-security"].startswith("max-age=")
        wait_state(page, "connected")
        rfb.wait(lambda: rfb.connections >= 1)

        untrusting = chromium_for(nss_home(tmp_path / "untrusting", None))
        other = untrusting.new_page()
        with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
            other.goto(console.url, timeout=PAGE_TIMEOUT_MS)
    finally:
        code = server.stop(clean=False)
        rfb.close()
    assert code == 0, server.log.text()
