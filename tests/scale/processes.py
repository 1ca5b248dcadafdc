"""
Real txvnc processes for the scale tests: C{twistd txvnc} (with or without
workers) from L{tests.twistd} with a known API key and an empty web
directory, and helpers to mint tokens and open consoles against it from
this process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.proxy.harness import Browser
from tests.twistd import Twistd, start_twistd

#: The API key (admin and proxy) of every scale test's twistd.
KEY = "scale-test-key"


def children(pid: int) -> list[int]:
    """The direct child processes of C{pid}."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def start_txvnc(directory: Path, *args: str, **options: Any) -> Twistd:
    """
    L{tests.twistd.start_twistd} with L{KEY} in its key file and an empty
    web directory (the scale tests need no page).
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "web").mkdir(exist_ok=True)
    key_file = directory / "api.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    return start_twistd(
        directory, *args, web=directory / "web", api_key_file=key_file, **options
    )


async def mint(server: Twistd, vnc_port: int, api_url: str | None = None) -> str:
    """
    A token for C{127.0.0.1:vnc_port} from C{server}'s API, or the one at
    C{api_url}.
    """
    response = await treq.post(
        (api_url or server.api_url) + "/v1/tokens",
        json={"host": "127.0.0.1", "port": vnc_port, "ttl": 600},
        headers={"Authorization": "Bearer " + KEY},
    )
    assert response.code == 201, await response.text()
    return str((await response.json())["token"])


async def open_console(port: int, token: str, host: str = "127.0.0.1") -> Browser:
    """A WebSocket console on C{host:port} with C{token}, once open."""
    factory = WebSocketClientFactory(
        f"ws://{host}:{port}/websockify?token={token}", protocols=["binary"]
    )
    factory.protocol = Browser
    factory.noisy = False
    factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0)
    browser: Browser = await TCP4ClientEndpoint(reactor, host, port).connect(factory)
    await browser.opened
    return browser
