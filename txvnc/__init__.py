"""
txvnc: a Twisted WebSocket-to-VNC console proxy with its own token API.

The package is split by the flow a console takes: L{txvnc.consoleauth} mints
and checks tokens, L{txvnc.proxy} turns a browser's WebSocket into a TCP
connection to a VNC server, and L{txvnc.tap} wires both into a twistd service.
"""

__version__ = "0.1.0"
