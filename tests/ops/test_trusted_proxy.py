"""
The client's address behind a load balancer: X-Forwarded-For from a
trusted proxy only, and the PROXY protocol (v1 and v2) through Twisted's
haproxy: endpoint, over real sockets.
"""

from __future__ import annotations

import io
import socket
import struct

import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from tests.proxy.harness import Stack
from tests.support.browser import Browser
from txvnc.core.forwarded import client_address, parse_networks
from txvnc.proxy.site import console_site, find_novnc

LB = parse_networks(["10.0.0.0/8", "127.0.0.1"])


@pytest.mark.parametrize(
    "peer, header, expected",
    [
        ("10.1.2.3:4000", "203.0.113.7", "203.0.113.7"),
        ("10.1.2.3:4000", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        ("10.1.2.3:4000", "203.0.113.7, 10.9.9.9", "203.0.113.7"),
        ("10.1.2.3:4000", "10.2.2.2, 10.3.3.3", "10.2.2.2"),
        ("10.1.2.3:4000", "not-an-ip", "10.1.2.3:4000"),
        ("10.1.2.3:4000", None, "10.1.2.3:4000"),
        ("192.0.2.9:4000", "203.0.113.7", "192.0.2.9:4000"),
        ("[::ffff:10.1.2.3]:4000", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_forwarded_for_only_from_trusted_proxies(peer, header, expected):
    """X-Forwarded-For names the client only when the peer is trusted, read from the right past trusted hops."""
    assert client_address(peer, header, LB) == expected


def test_no_trusted_proxies_means_the_peer():
    """Without --trusted-proxy the header is ignored."""
    assert client_address("10.1.2.3:4000", "203.0.113.7", ()) == "10.1.2.3:4000"


@pytest_twisted.ensureDeferred
async def test_forwarded_for_over_real_sockets(vnc):
    """A console through a trusted proxy is logged and counted under the forwarded address."""
    stack = Stack()
    try:
        token = await stack.mint(vnc.address.port)
        browser = await stack.open_browser(
            f"token={token}", headers={"X-Forwarded-For": "203.0.113.7"}
        )
        await browser.opened
        (console,) = stack.factory.consoles
        assert console.client.startswith("127.0.0.1:")
        browser.sendClose(1000)
        await browser.closed
    finally:
        await stack.stop()

    stack = Stack(trusted_proxies=parse_networks(["127.0.0.0/8"]))
    try:
        token = await stack.mint(vnc.address.port)
        browser = await stack.open_browser(
            f"token={token}", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        )
        await browser.opened
        (console,) = stack.factory.consoles
        assert console.client == "203.0.113.7"

        # The access log names the same client for a page load.
        stack.proxy_port.factory._logFile = io.StringIO()
        response = await treq.get(
            f"http://127.0.0.1:{stack.port}/vnc_auto.html",
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"},
            persistent=False,
        )
        await treq.content(response)
        assert response.code == 200
        access = stack.proxy_port.factory._logFile.getvalue()
        assert access.startswith('"203.0.113.7" - - '), access
        assert "GET /vnc_auto.html" in access
    finally:
        await stack.stop()


def proxy_v1(src: str, port: int) -> bytes:
    return f"PROXY TCP4 {src} 127.0.0.1 {port} 6080\r\n".encode()


def proxy_v2(src: str, port: int) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 6080)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


class HeaderFirst(ProtocolWrapper):
    """
    Sends the PROXY header before the wrapped client says anything.
    """

    def makeConnection(self, transport):
        transport.write(self.factory.header)
        super().makeConnection(transport)


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
@pytest_twisted.ensureDeferred
async def test_proxy_protocol_names_the_client(vnc, header):
    """Behind a haproxy: listener the console's client is the address in the PROXY header."""
    stack = Stack()
    port = await serverFromString(reactor, "haproxy:tcp:0:interface=127.0.0.1").listen(
        console_site(stack.factory, novnc_dir=find_novnc())
    )
    try:
        token = await stack.mint(vnc.address.port)
        number = port.getHost().port
        host = f"127.0.0.1:{number}"
        ws = WebSocketClientFactory(
            f"ws://{host}/websockify?token={token}", origin=f"http://{host}", protocols=["binary"]
        )
        ws.protocol = Browser
        wrapping = WrappingFactory(ws)
        wrapping.protocol = HeaderFirst
        wrapping.header = header("198.51.100.9", 40000)
        wrapper = await TCP4ClientEndpoint(reactor, "127.0.0.1", number).connect(wrapping)
        browser = wrapper.wrappedProtocol
        await browser.opened
        (console,) = stack.factory.consoles
        assert console.client == "198.51.100.9:40000"
        browser.sendClose(1000)
        await browser.closed
    finally:
        await port.stopListening()
        await stack.stop()
