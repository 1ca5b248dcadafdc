"""
RFB (RFC 6143) on both sides of a console, without I/O.

When a token asks for VNC security or a console policy, the proxy speaks
RFB itself: it negotiates security with the VNC server
(L{txvnc.rfb.server}), offers the browser security type None
(L{txvnc.rfb.browser}), then relays messages, dropping what the policy
forbids (L{txvnc.rfb.client_messages}, L{txvnc.rfb.server_messages}).
Everything here is pure: bytes in, bytes and decisions out.
"""
