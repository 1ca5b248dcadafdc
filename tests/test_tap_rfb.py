"""
The RFB security proxy's twistd options: checked at start-up, carried to
the proxy factory and the token API.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from tests.rfb.pki import make_pki
from txvnc.proxy.websocket import ConsoleProxyFactory
from txvnc.service import proxy
from txvnc.tap import Options, makeService

pytestmark = pytest.mark.usefixtures("in_tmp")


def options(*argv: str) -> Options:
    config = Options()
    config.parseOptions(list(argv))
    return config


def test_defaults_relay_untouched() -> None:
    """Without RFB options the proxy has no default security: plain relaying."""
    config = options()
    assert config.settings.rfb.default_security is None
    assert config.settings.rfb.tls is None
    assert config["secret-key-file"] == "txvnc-secret.key"
    assert config["allowed-unix-dir"] == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vnc-security", "tls"], "--vnc-security must be one of: none, vnc, vencrypt"),
        (["--vnc-ca-cert", "/no/such/ca.pem"], "cannot load the VNC TLS files"),
        (["--vnc-client-key", "k.pem"], "--vnc-client-key needs --vnc-client-cert"),
        (["--secret-key-file", "/no/such/dir/s.key"], "/no/such/dir does not exist"),
    ],
)
def test_bad_rfb_options_are_usage_errors(argv: list[str], message: str) -> None:
    """Each RFB misconfiguration is a usage error naming the option."""
    with pytest.raises(UsageError, match=message):
        options(*argv)


def test_tls_files_and_unix_dirs_reach_the_proxy(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The VeNCrypt files are loaded at start-up; unix dirs reach proxy and API; the secret key file is made 0600."""
    pki = make_pki(in_tmp)
    config = options(
        "--store", "memory:", "--listen", "tcp:0", "--api-listen", "tcp:0",
        "--vnc-security", "vencrypt",
        "--vnc-ca-cert", str(pki.ca_cert),
        "--vnc-client-cert", str(pki.client_cert),
        "--vnc-client-key", str(pki.client_key),
        "--allowed-unix-dir", "/run/vnc",
        "--allowed-unix-dir", "/var/lib/libvirt/qemu",
    )
    assert config.settings.rfb.default_security == "vencrypt"
    assert config.settings.rfb.tls is not None
    built: list[ConsoleProxyFactory] = []

    def recording(*args: object, **kwargs: object) -> ConsoleProxyFactory:
        factory = ConsoleProxyFactory(*args, **kwargs)  # type: ignore[arg-type]
        built.append(factory)
        return factory

    monkeypatch.setattr(proxy, "ConsoleProxyFactory", recording)
    makeService(config, MemoryReactorClock())
    (factory,) = built
    assert factory.rfb is config.settings.rfb
    assert factory.allowed_unix_dirs == ("/run/vnc", "/var/lib/libvirt/qemu")
    assert stat.S_IMODE(os.stat(in_tmp / "txvnc-secret.key").st_mode) == 0o600
