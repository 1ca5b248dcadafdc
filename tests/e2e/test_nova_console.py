"""
The operator's view of the nova drop-in: nova mints a console with its own
code, Chromium opens nova's access URL as nova hands it out
(C{vnc_lite.html?path=%3Ftoken%3D...}), and txvnc shows the qemu VM's
screen.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.novacell import Nova
from tests.support.vncservers import VM

from .conftest import ARTIFACTS
from .test_console import LIT_PIXELS_JS, MIN_LIT, PAGE_TIMEOUT_MS, open_console

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_novas_access_url_shows_the_vm(page: Any, nova: Nova, vm: VM) -> None:
    instance = nova.cell.add_instance()
    minted = nova.mint(instance, vm.port)
    assert "/vnc_lite.html?path=%3Ftoken%3D" in minted["access_url"]
    state, text = open_console(page, minted["access_url"])
    assert state == "connected", f"the console did not open: {text!r}"
    assert text.startswith("Connected to QEMU"), text
    lit = page.wait_for_function(
        LIT_PIXELS_JS, arg=MIN_LIT, timeout=PAGE_TIMEOUT_MS, polling=250
    ).json_value()
    assert lit["top"] >= MIN_LIT["top"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "nova-console.png"))
    nova.txvnc.log.wait_for(rf"connecting to: 127\.0\.0\.1:{vm.port}")
