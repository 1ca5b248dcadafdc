"""
The WebSocket side: a browser's WebSocket in, a TCP connection to a VNC
server out, and the policy that decides between them.
"""
