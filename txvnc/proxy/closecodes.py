"""
WebSocket close codes txvnc sends (RFC 6455 section 7.4; 4000-4999 are
ours). One module, so every part of the proxy and the console page agree.
"""

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INTERNAL_ERROR = 1011

#: The VNC server's security could not be negotiated (no common type, wrong
#: password, TLS failure), or the browser broke the console's RFB policy or
#: limits. The close reason says which.
CLOSE_RFB_SECURITY = 4005
