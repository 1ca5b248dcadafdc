"""
Why an RFB conversation had to stop. The messages are shown to the user in
a WebSocket close frame and logged, so they say what happened in plain words
and never carry a secret.
"""

from __future__ import annotations


class RFBError(Exception):
    """
    The conversation cannot go on.
    """


class ProtocolViolation(RFBError):
    """
    A peer sent bytes that are not RFB, or not the RFB we expected.
    """


class SecurityNegotiationFailed(RFBError):
    """
    The VNC server and the token's security settings have nothing in
    common, or the server refused our credentials.
    """


class LimitExceeded(RFBError):
    """
    The browser sent something larger than the proxy's sanity limits.
    """
