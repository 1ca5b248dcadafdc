"""
The proxy's side of the RFB handshake with the browser, as a server: the
token already proved who the user is, so the only security type offered is
None, and the ServerInit sent is the one the VNC server gave the proxy.
"""

from __future__ import annotations

from txvnc.rfb.errors import ProtocolViolation
from txvnc.rfb.machine import ByteMachine, Steps
from txvnc.rfb.protocol import NONE, BrowserReady, Send, parse_version, u32

VERSION = b"RFB 003.008\n"


class BrowserHandshake(ByteMachine):
    """
    Send L{greeting} first, then feed it what the browser sends; it answers
    with L{Send} actions and finally L{BrowserReady}. The browser's
    ClientInit shared flag is read and ignored: the token decides.
    """

    greeting = VERSION

    def __init__(self, server_init: bytes) -> None:
        self.server_init = server_init
        super().__init__(self._steps())

    def _steps(self) -> Steps:
        major, minor = parse_version((yield 12), "browser")
        if major != 3 or minor < 3:
            raise ProtocolViolation(f"the browser speaks RFB {major}.{minor}")
        minor = 8 if minor >= 8 else 7 if minor == 7 else 3
        if minor == 3:
            yield Send(u32(NONE))
        else:
            yield Send(bytes([1, NONE]))
            chosen = (yield 1)[0]
            if chosen != NONE:
                raise ProtocolViolation(
                    f"the browser chose security type {chosen}; only None is offered"
                )
            if minor == 8:
                yield Send(u32(0))
        yield 1  # ClientInit: the shared flag is the token's to set
        yield Send(self.server_init)
        yield BrowserReady(f"3.{minor}")
