from twisted.application.service import ServiceMaker

txvnc = ServiceMaker(
    "txvnc",
    "txvnc.tap",
    "WebSocket-to-VNC console proxy with a consoleauth token API.",
    "txvnc",
)
