"""
A real Redis for the tests: Debian's redis-server on a free loopback port,
its files in a temporary directory, nothing saved to disk.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

from tests.support.processes import listen_on_free_port, stop

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """
    One redis-server process; L{url} names database C{db} of it.
    """

    def __init__(self, directory: Path, tls: Any = None) -> None:
        """
        With C{tls} (a L{tests.rfb.pki.PKI}), the server speaks TLS only,
        with that PKI's server certificate, and asks no client certificate.
        """
        self.directory = directory
        self.tls = tls is not None

        def ports(port: int) -> list[str]:
            if tls is None:
                return ["--port", str(port)]
            return [
                "--port", "0",
                "--tls-port", str(port),
                "--tls-cert-file", str(tls.server_cert),
                "--tls-key-file", str(tls.server_key),
                "--tls-ca-cert-file", str(tls.ca_cert),
                "--tls-auth-clients", "no",
            ]  # fmt: skip

        server = listen_on_free_port(
            lambda port: [
                REDIS_SERVER,
                "--bind", "127.0.0.1",
                *ports(port),
                "--dir", str(directory),
                "--save", "",
                "--appendonly", "no",
                "--databases", "64",
            ],
            "redis-server",
            r"Ready to accept connections",
            r"Address already in use",
            log_path=directory / "redis.log",
        )  # fmt: skip
        self.process = server.process
        self.port = server.port

    def url(self, db: int = 0) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/{db}"

    def flush(self, db: int) -> None:
        """
        Empty database C{db}, so a reused number starts clean.
        """
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            s.sendall(f"SELECT {db}\r\nFLUSHDB\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 2:
                reply += s.recv(64)

    def stop(self) -> None:
        stop(self.process, must_obey=False)
