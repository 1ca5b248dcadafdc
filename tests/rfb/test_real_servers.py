"""
The RFB security proxy against real VNC servers, at the protocol level: a
WebSocket client speaking RFB like noVNC goes through the proxy to Xtigervnc
(VncAuth, X509Vnc, X509None, a unix socket) and qemu (password, TLS), is
offered security None only, and sees the server's screen; wrong passwords
and untrusted certificates close the console with a clear reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher

from tests.proxy.harness import Stack
from tests.support.vncservers import PASSWORD, password_file, qemu, tigervnc, x11vnc
from txvnc.proxy.security import RFBConfig, VNCTLSConfig

from .pki import PKI, make_pki
from .rfbclient import RFBBrowser, first_update, handshake

pytestmark = [pytest.mark.vnc_servers, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def proxy_log() -> Iterator[list[str]]:
    """
    The proxy's log lines during the test, formatted.
    """
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def negotiated(log: list[str]) -> str:
    """
    What the proxy negotiated with the VNC server, from its log line.
    """
    ready = [line for line in log if "console ready:" in line]
    assert ready, "the proxy never logged a ready console"
    return ready[-1].split("console ready: ", 1)[1]


@pytest.fixture
def make_stack() -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**kwargs: object) -> Stack:
        stack = Stack(**kwargs)  # type: ignore[arg-type]
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        pytest_twisted.blockon(Deferred.fromCoroutine(stack.stop()))


def tls_stack(make_stack: Callable[..., Stack], pki: PKI, ca: Path | None = None) -> Stack:
    config = VNCTLSConfig(str(ca or pki.ca_cert), str(pki.client_cert), str(pki.client_key))
    return make_stack(rfb=RFBConfig(tls=config))


async def connect(stack: Stack, port: int | None, **options: object) -> RFBBrowser:
    token = await stack.mint(port, **options)
    browser = await stack.open_browser(f"token={token}", protocol=RFBBrowser)
    await browser.opened
    return browser


async def console_works(browser: RFBBrowser, name: str | None = None) -> None:
    init = await handshake(browser)
    assert (init.width, init.height) != (0, 0)
    if name is not None:
        assert name in init.name
    assert await first_update(browser, init.width, init.height) >= 1
    browser.sendClose(1000)
    await browser.closed


async def refused(browser: RFBBrowser) -> str:
    """
    Wait for the console to close; its 4005 reason.
    """
    _, code, reason = await browser.closed
    assert code == 4005, f"closed with {code}: {reason}"
    return reason


# Xtigervnc


@pytest_twisted.ensureDeferred
async def test_tigervnc_vncauth(tmp_path: Path, make_stack, proxy_log) -> None:
    """Xtigervnc asking for a VNC password opens with the token's password, browser offered None."""
    with tigervnc(tmp_path, "-SecurityTypes", "VncAuth", "-PasswordFile", str(password_file(tmp_path))) as server:
        stack = make_stack()
        browser = await connect(stack, server.port, security="vnc", vnc_password=PASSWORD)
        await console_works(browser, "txvnc-test")
        assert negotiated(proxy_log).startswith("RFB 3.8 with VNC Authentication to the VNC server")


@pytest_twisted.ensureDeferred
async def test_tigervnc_wrong_password_closes_with_a_reason(tmp_path: Path, make_stack) -> None:
    """A wrong VNC password closes the console with 4005 and the server's reason, not a hang."""
    with tigervnc(tmp_path, "-SecurityTypes", "VncAuth", "-PasswordFile", str(password_file(tmp_path))) as server:
        stack = make_stack()
        browser = await connect(stack, server.port, security="vnc", vnc_password="wrong")
        reason = await refused(browser)
        assert reason.startswith("VNC authentication failed"), reason
        assert browser.buffer == b"", "the browser got RFB bytes from a failed console"


@pytest_twisted.ensureDeferred
async def test_tigervnc_security_mismatch_names_both(tmp_path: Path, make_stack) -> None:
    """A token allowing only None against a VncAuth server says what the server requires."""
    with tigervnc(tmp_path, "-SecurityTypes", "VncAuth", "-PasswordFile", str(password_file(tmp_path))) as server:
        stack = make_stack()
        browser = await connect(stack, server.port, security="none")
        reason = await refused(browser)
        assert reason == "VNC server requires security type VNC Authentication, allowed: None"


@pytest_twisted.ensureDeferred
async def test_tigervnc_x509vnc(tmp_path: Path, make_stack, pki: PKI, proxy_log) -> None:
    """VeNCrypt X509Vnc: TLS verified against the CA, then the password inside it."""
    with tigervnc(
        tmp_path,
        "-SecurityTypes", "X509Vnc",
        "-X509Cert", str(pki.server_cert),
        "-X509Key", str(pki.server_key),
        "-PasswordFile", str(password_file(tmp_path)),
    ) as server:
        stack = tls_stack(make_stack, pki)
        browser = await connect(stack, server.port, security="vencrypt", vnc_password=PASSWORD)
        await console_works(browser, "txvnc-test")
        assert "with VeNCrypt X509Vnc to the VNC server" in negotiated(proxy_log)


@pytest_twisted.ensureDeferred
async def test_tigervnc_x509none(tmp_path: Path, make_stack, pki: PKI, proxy_log) -> None:
    """VeNCrypt X509None: TLS and no password."""
    with tigervnc(
        tmp_path,
        "-SecurityTypes", "X509None",
        "-X509Cert", str(pki.server_cert),
        "-X509Key", str(pki.server_key),
    ) as server:
        stack = tls_stack(make_stack, pki)
        browser = await connect(stack, server.port, security="vencrypt")
        await console_works(browser)
        assert "with VeNCrypt X509None to the VNC server" in negotiated(proxy_log)


@pytest_twisted.ensureDeferred
async def test_tigervnc_untrusted_certificate_is_refused(tmp_path: Path, make_stack, pki: PKI, proxy_log) -> None:
    """A server certificate from another CA stops the console with a clear reason."""
    with tigervnc(
        tmp_path,
        "-SecurityTypes", "X509None",
        "-X509Cert", str(pki.server_cert),
        "-X509Key", str(pki.server_key),
    ) as server:
        stack = tls_stack(make_stack, pki, ca=pki.other_ca_cert)
        browser = await connect(stack, server.port, security="vencrypt")
        reason = await refused(browser)
        assert reason == "TLS with the VNC server failed: certificate verify failed"


@pytest.mark.parametrize("check_host", [True, False], ids=["names", "ca-only"])
@pytest_twisted.ensureDeferred
async def test_tigervnc_certificate_naming_another_host(
    tmp_path: Path, make_stack, pki: PKI, check_host: bool
) -> None:
    """
    A server certificate of the right CA that names another host is refused
    with the host check (--vnc-check-hostname yes) and accepted without it,
    as nova accepts it (CA only).
    """
    with tigervnc(
        tmp_path,
        "-SecurityTypes", "X509None",
        "-X509Cert", str(pki.other_server_cert),
        "-X509Key", str(pki.other_server_key),
    ) as server:  # fmt: skip
        config = VNCTLSConfig(
            str(pki.ca_cert), str(pki.client_cert), str(pki.client_key), check_host
        )
        stack = make_stack(rfb=RFBConfig(tls=config))
        browser = await connect(stack, server.port, security="vencrypt")
        if check_host:
            reason = await refused(browser)
            assert "IPAddressMismatch" in reason, reason
        else:
            await console_works(browser)


@pytest.mark.timeout(20)
@pytest_twisted.ensureDeferred
async def test_tigervnc_certificate_without_subject_alt_name(
    tmp_path: Path, make_stack, pki: PKI, proxy_log
) -> None:
    """
    A server certificate of the right CA with no subjectAltName (its common
    name the very address) cannot pass the host check: the console closes
    at once with 4005 and a reason naming what is missing, and the proxy
    logs it. (Twisted's own check logged "while verifying certificate" and
    let the TLS handshake through: the console went on unchecked.)
    """
    with tigervnc(
        tmp_path,
        "-SecurityTypes", "X509None",
        "-X509Cert", str(pki.bare_server_cert),
        "-X509Key", str(pki.bare_server_key),
    ) as server:  # fmt: skip
        stack = tls_stack(make_stack, pki)
        browser = await connect(stack, server.port, security="vencrypt")
        reason = await refused(browser)
        assert reason == (
            "TLS with the VNC server failed: its certificate names no host "
            "(no subjectAltName) to check against 127.0.0.1"
        ), reason
        assert browser.buffer == b"", "the browser got RFB bytes from a refused console"
        assert any(reason in line for line in proxy_log), proxy_log


@pytest_twisted.ensureDeferred
async def test_tigervnc_unix_socket(tmp_path: Path, make_stack) -> None:
    """A token naming a unix socket under an allowed directory reaches that server."""
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    path = sockets / "vnc.sock"
    with tigervnc(
        tmp_path,
        "-rfbunixpath", str(path),
        "-SecurityTypes", "VncAuth",
        "-PasswordFile", str(password_file(tmp_path)),
    ):
        stack = make_stack(allowed_unix_dirs=(str(sockets),))
        browser = await connect(stack, None, unix_path=str(path), security="vnc", vnc_password=PASSWORD)
        await console_works(browser, "txvnc-test")


@pytest_twisted.ensureDeferred
async def test_tigervnc_unix_socket_behind_a_link_out(tmp_path: Path, make_stack) -> None:
    """A link in the allowed directory to Xtigervnc's socket outside it is refused at mint, and a link planted after mint is refused at the upgrade."""
    sockets, outside = tmp_path / "sockets", tmp_path / "outside"
    sockets.mkdir()
    outside.mkdir()
    path = outside / "vnc.sock"
    with tigervnc(tmp_path, "-rfbunixpath", str(path), "-SecurityTypes", "None"):
        stack = make_stack(allowed_unix_dirs=(str(sockets),))
        (sockets / "escape.sock").symlink_to(path)
        with pytest.raises(AssertionError, match="minting failed: 403"):
            await stack.mint(None, unix_path=str(sockets / "escape.sock"))
        # Nothing there at mint; a link to the outside socket afterwards.
        token = await stack.mint(None, unix_path=str(sockets / "vm.sock"))
        (sockets / "vm.sock").symlink_to(path)
        code, reason = await stack.raw_upgrade(f"token={token}")
        assert (code, reason) == (403, "The console's target is not allowed")


# qemu


@pytest_twisted.ensureDeferred
async def test_qemu_password(tmp_path: Path, make_stack) -> None:
    """qemu with password=on, the password set over QMP, opens with the token's password."""
    with qemu(tmp_path, ",password=on") as vm:
        vm.command("change-vnc-password", password=PASSWORD)
        stack = make_stack()
        browser = await connect(stack, vm.port, security="vnc", vnc_password=PASSWORD)
        await console_works(browser)


@pytest_twisted.ensureDeferred
async def test_qemu_wrong_password(tmp_path: Path, make_stack) -> None:
    """qemu refusing a wrong password closes the console with 4005."""
    with qemu(tmp_path, ",password=on") as vm:
        vm.command("change-vnc-password", password=PASSWORD)
        stack = make_stack()
        browser = await connect(stack, vm.port, security="vnc", vnc_password="nope")
        assert (await refused(browser)).startswith("VNC authentication failed")


@pytest_twisted.ensureDeferred
async def test_qemu_tls_with_password(tmp_path: Path, make_stack, pki: PKI, proxy_log) -> None:
    """qemu with tls-creds-x509 (verify-peer) and a password: VeNCrypt X509Vnc with our client certificate."""
    with qemu(
        tmp_path,
        ",tls-creds=tls0,password=on",
        "-object", f"tls-creds-x509,id=tls0,dir={pki.qemu_dir},endpoint=server,verify-peer=on",
    ) as vm:
        vm.command("change-vnc-password", password=PASSWORD)
        stack = tls_stack(make_stack, pki)
        browser = await connect(stack, vm.port, security="vencrypt", vnc_password=PASSWORD)
        await console_works(browser)
        assert "with VeNCrypt X509Vnc to the VNC server" in negotiated(proxy_log)


@pytest_twisted.ensureDeferred
async def test_qemu_tls_without_password(tmp_path: Path, make_stack, pki: PKI, proxy_log) -> None:
    """qemu with tls-creds-x509 alone: VeNCrypt X509None."""
    with qemu(
        tmp_path,
        ",tls-creds=tls0",
        "-object", f"tls-creds-x509,id=tls0,dir={pki.qemu_dir},endpoint=server,verify-peer=on",
    ) as vm:
        stack = tls_stack(make_stack, pki)
        browser = await connect(stack, vm.port, security="vencrypt")
        await console_works(browser)
        assert "with VeNCrypt X509None to the VNC server" in negotiated(proxy_log)


# x11vnc, for the older RFB versions


@pytest.mark.parametrize("version", ["3.3", "3.7"])
@pytest_twisted.ensureDeferred
async def test_x11vnc_old_rfb_versions(tmp_path: Path, make_stack, proxy_log, version: str) -> None:
    """x11vnc speaking RFB 3.3 or 3.7 with a password: the proxy answers in that version, the browser gets 3.8."""
    with tigervnc(tmp_path, "-SecurityTypes", "None") as xserver:
        with x11vnc(tmp_path, xserver.display, "-rfbversion", version, "-rfbauth", str(password_file(tmp_path))) as port:
            stack = make_stack()
            browser = await connect(stack, port, security="vnc", vnc_password=PASSWORD)
            await console_works(browser)
            assert negotiated(proxy_log).startswith(f"RFB {version} with VNC Authentication to the VNC server")


@pytest_twisted.ensureDeferred
async def test_x11vnc_3_3_wrong_password(tmp_path: Path, make_stack) -> None:
    """A 3.3 server gives no reason for a wrong password; the console still closes clearly."""
    with tigervnc(tmp_path, "-SecurityTypes", "None") as xserver:
        with x11vnc(tmp_path, xserver.display, "-rfbversion", "3.3", "-rfbauth", str(password_file(tmp_path))) as port:
            stack = make_stack()
            browser = await connect(stack, port, security="vnc", vnc_password="wrong")
            assert await refused(browser) == "VNC authentication failed"
