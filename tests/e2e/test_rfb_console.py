"""
The RFB security proxy end to end: C{txvnc console create --security ...}
mints tokens on a real C{twistd txvnc} started with VeNCrypt client
certificates, and headless Chromium's noVNC reaches the connected state on
password-protected and TLS-only Xtigervnc and qemu servers without ever
being asked for a password. A wrong password shows its reason on the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rfb.pki import PKI, make_pki
from tests.support.twistd import Twistd
from tests.support.vncservers import PASSWORD, password_file, qemu, tigervnc

from .conftest import serve_txvnc
from .test_console import PAGE_TIMEOUT_MS, new_instance, open_console

pytestmark = [pytest.mark.e2e, pytest.mark.vnc_servers, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_txvnc(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Twistd]:
    """
    twistd txvnc with the proxy's VeNCrypt CA and client certificate; at the
    end, its log must hold no VNC password.
    """
    server = None
    for server in serve_txvnc(
        tmp_path_factory,
        "--vnc-ca-cert", str(pki.ca_cert),
        "--vnc-client-cert", str(pki.client_cert),
        "--vnc-client-key", str(pki.client_key),
    ):
        yield server
    assert server is not None
    assert PASSWORD not in server.log.text(), "a VNC password appears in the twistd log"


def mint(server: Twistd, tmp_path: Path, port: int, *options: str, password: str | None = None) -> str:
    """
    C{txvnc console create} with RFB options; the access URL.
    """
    if password is not None:
        secret = tmp_path / "vnc-password"
        secret.write_text(password + "\n")
        options += ("--vnc-password-file", str(secret))
    return server.create_console("127.0.0.1", port, new_instance(), *options).url


def assert_connected_without_password(page: Any, url: str) -> None:
    """
    The page reaches "connected", and noVNC negotiated security None (type
    1): it was never offered, so never asked for, a password.
    """
    state, text = open_console(page, url)
    assert state == "connected", f"the console did not connect: {text!r}"
    assert page.evaluate("() => window.txvnc.rfb._rfbAuthScheme") == 1


def test_tigervnc_vncauth_in_the_browser(page: Any, secure_txvnc: Twistd, tmp_path: Path) -> None:
    """noVNC connects to Xtigervnc with VncAuth through txvnc and is never asked for the password."""
    with tigervnc(tmp_path, "-SecurityTypes", "VncAuth", "-PasswordFile", str(password_file(tmp_path))) as server:
        url = mint(secure_txvnc, tmp_path, server.port, "--security", "vnc", password=PASSWORD)
        assert_connected_without_password(page, url)
        secure_txvnc.log.wait_for(r"console ready: RFB 3\.8 with VNC Authentication to the VNC server")


def test_tigervnc_x509vnc_in_the_browser(page: Any, secure_txvnc: Twistd, pki: PKI, tmp_path: Path) -> None:
    """noVNC connects to Xtigervnc with VeNCrypt X509Vnc: TLS and the password stay on the proxy."""
    with tigervnc(
        tmp_path,
        "-SecurityTypes", "X509Vnc",
        "-X509Cert", str(pki.server_cert),
        "-X509Key", str(pki.server_key),
        "-PasswordFile", str(password_file(tmp_path)),
    ) as server:
        url = mint(secure_txvnc, tmp_path, server.port, "--security", "vencrypt", password=PASSWORD)
        assert_connected_without_password(page, url)
        secure_txvnc.log.wait_for(r"console ready: .*VeNCrypt X509Vnc")


def test_qemu_password_in_the_browser(page: Any, secure_txvnc: Twistd, tmp_path: Path) -> None:
    """noVNC connects to qemu with password=on (set over QMP) without a password prompt."""
    with qemu(tmp_path, ",password=on") as vm:
        vm.command("change-vnc-password", password=PASSWORD)
        url = mint(secure_txvnc, tmp_path, vm.port, "--security", "vnc", password=PASSWORD)
        assert_connected_without_password(page, url)


def test_qemu_tls_in_the_browser(page: Any, secure_txvnc: Twistd, pki: PKI, tmp_path: Path) -> None:
    """noVNC connects to qemu with tls-creds-x509 (verify-peer) and a password: VeNCrypt X509Vnc."""
    with qemu(
        tmp_path,
        ",tls-creds=tls0,password=on",
        "-object", f"tls-creds-x509,id=tls0,dir={pki.qemu_dir},endpoint=server,verify-peer=on",
    ) as vm:
        vm.command("change-vnc-password", password=PASSWORD)
        url = mint(secure_txvnc, tmp_path, vm.port, "--security", "vencrypt", password=PASSWORD)
        assert_connected_without_password(page, url)


def test_wrong_password_shows_why(page: Any, secure_txvnc: Twistd, tmp_path: Path) -> None:
    """A wrong VNC password ends with close code 4005 and the reason on the page, not a hang or a prompt."""
    with tigervnc(tmp_path, "-SecurityTypes", "VncAuth", "-PasswordFile", str(password_file(tmp_path))) as server:
        url = mint(secure_txvnc, tmp_path, server.port, "--security", "vnc", password="wrong")
        state, _ = open_console(page, url)
        assert state == "disconnected"
        page.wait_for_function(
            "() => document.body.dataset.closeCode !== undefined", timeout=PAGE_TIMEOUT_MS, polling=100
        )
        assert page.evaluate("() => document.body.dataset.closeCode") == "4005"
        text = page.locator("#status").inner_text()
        assert text.startswith("Disconnected: VNC authentication failed"), text


def test_tigervnc_x509none_in_the_browser(page: Any, secure_txvnc: Twistd, pki: PKI, tmp_path: Path) -> None:
    """noVNC connects to Xtigervnc with VeNCrypt X509None: TLS to the server, nothing asked of the user."""
    with tigervnc(
        tmp_path,
        "-SecurityTypes", "X509None",
        "-X509Cert", str(pki.server_cert),
        "-X509Key", str(pki.server_key),
    ) as server:
        url = mint(secure_txvnc, tmp_path, server.port, "--security", "vencrypt")
        assert_connected_without_password(page, url)
        secure_txvnc.log.wait_for(r"console ready: .*VeNCrypt X509None")


def test_view_only_in_the_browser(page: Any, secure_txvnc: Twistd, tmp_path: Path) -> None:
    """A view-only console shows the screen; keys and clicks typed in noVNC are dropped by the proxy."""
    with tigervnc(tmp_path, "-SecurityTypes", "VncAuth", "-PasswordFile", str(password_file(tmp_path))) as server:
        url = mint(secure_txvnc, tmp_path, server.port, "--security", "vnc", "--view-only", password=PASSWORD)
        since = secure_txvnc.log.mark()
        assert_connected_without_password(page, url)
        # The page hides input on a view-only console; a client that sends
        # input anyway (this one, told to) must still be stopped by the proxy.
        assert page.evaluate("() => window.txvnc.rfb.viewOnly") is True
        page.evaluate("() => { window.txvnc.rfb.viewOnly = false; }")
        canvas = page.locator("#screen canvas")
        canvas.click()
        page.keyboard.type("hello")
        # Closing the page closes the console; its summary counts what was dropped.
        page.goto("about:blank")
        found = secure_txvnc.log.wait_for(r"policy dropped (.*)$", since=since)
        assert re.search(r"\d+ key", found.group(1)), found.group(0)
        assert re.search(r"\d+ pointer", found.group(1)), found.group(0)
