"""
A real C{twistd -n txvnc} for every test suite, started one way.

L{start_twistd} (or L{start_twistd_async} inside a pytest-twisted test)
starts it on free loopback ports, with:

- the token API (C{api=True}) and/or the proxy (C{proxy=True}), each on a
  fresh port, retried on new ports when one was taken before twistd bound it;
  C{workers=N} for N proxy processes on one port;
- a memory store, an API key file in its directory (or one holding a key
  the test chose), noVNC for the page (or an empty web directory), and
  every loopback VNC port (1024-65535) allowed, since the tests' VNC
  servers listen on free ports; any of these can be changed, and C{args}
  come last so they override the defaults;
- its output (stdout and stderr) watched line by line and copied to a
  C{twistd*.log} file in its directory, which the end-of-session secret scan
  reads (L{tests.support.logscan}), its API keys and secret key registered
  as secrets no log may hold; optionally an audit log beside it; with
  C{logfile=True}, twistd's C{--logfile} (C{twistd-file.log} there) is what
  is watched, followed by C{tail -F} across rotations;
- readiness known from its own log lines, not from sleeping: every listener
  says "... starting on PORT" (each worker under C{workers=N}), and the
  signal line says SIGTERM now drains gracefully;
- a parent-death signal (L{tests.support.processes.spawn}), so it never
  outlives the test run.

A L{Twistd} mints tokens through its own API (L{Twistd.mint} from a thread,
L{Twistd.mint_async} from the reactor, both L{tests.support.mint}) and
remembers them, runs the C{txvnc} command against itself (L{Twistd.cli}),
and waits for its log lines.

L{Twistd.stop} sends SIGTERM, kills after a bound, always reaps, and by
default asserts the stop was clean: exit status 0 or -SIGTERM, "Server Shut
Down.", no traceback, and no token minted through it in its log.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.threads import deferToThread

from tests.support.cli import Console, run_cli
from tests.support.logscan import SECRETS
from tests.support.mint import mint, mint_blocking
from tests.support.processes import (
    PORT_TRIES,
    STOP_TIMEOUT,
    OutputWatcher,
    free_ports,
    spawn,
    stop,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TWISTD = BIN / "twistd"
NOVNC = REPO / "node_modules" / "@novnc" / "novnc"

#: Loopback endpoint template for a listener; C{{port}} is filled in.
LOOPBACK = "tcp:{port}:interface=127.0.0.1"

#: The tests' VNC servers listen on whatever free port they got.
ANY_LOOPBACK_TARGET = "127.0.0.1:1024-65535"

#: A listener that could not bind its port because someone else has it.
_PORT_TAKEN = re.compile(r"Couldn't listen on .*in use|Address already in use")

#: A comment in a keys file: it starts a line or follows white space.
_KEY_COMMENT = re.compile(r"(^|\s)#.*$")


def require(ok: bool, what: str) -> None:
    """
    Fail (not skip) a test whose setup is missing something, saying how to
    install it.
    """
    if not ok:
        pytest.fail(
            f"this test needs {what}; run `make install` and "
            "`scripts/system-deps test`",
            pytrace=False,
        )


@dataclass
class Twistd:
    """
    A running C{twistd -n txvnc}; C{proxy_port} or C{api_port} is 0 when
    that side does not run in it.
    """

    process: subprocess.Popen[str]
    log: OutputWatcher
    log_path: Path
    directory: Path
    proxy_port: int
    api_port: int
    key_file: Path
    base_url: str
    #: Names its log file and its messages.
    name: str | None = None
    #: The client TLS context for a proxy listening with ssl:.
    tls: ssl.SSLContext | None = None
    #: Its audit log (C{audit_log=True}).
    audit_path: Path | None = None
    #: Its C{--logfile} (C{logfile=True}), which L{log} follows.
    logfile: Path | None = None
    #: Tokens minted through this process: its log must hold none.
    minted: list[str] = field(default_factory=list)
    _ready: list[str] = field(default_factory=list, repr=False)
    _http: http.client.HTTPConnection | None = field(default=None, repr=False)
    _http_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_key(self) -> str:
        """
        The first key of its keys file that may mint (role admin, or a bare
        key), read now: a test may rewrite the file and reload.
        """
        for roles, key in self.keys():
            if "admin" in roles:
                return key
        raise AssertionError(f"no admin key in {self.key_file}")

    def keys(self) -> list[tuple[frozenset[str], str]]:
        """
        The roles and key of each line of its keys file (a bare key has
        both roles).
        """
        found = []
        for line in self.key_file.read_text().splitlines():
            words = _KEY_COMMENT.sub("", line).split()
            if len(words) == 1:
                found.append((frozenset({"admin", "proxy"}), words[0]))
            elif len(words) == 2:
                found.append((frozenset(words[0].split(",")), words[1]))
        return found

    def register_secrets(self) -> None:
        """
        Add its API keys and the secret key that seals VNC passwords to the
        secrets no log may hold.
        """
        if self.key_file.exists():
            SECRETS.update(key for _, key in self.keys())
        secret_key = self.directory / "txvnc-secret.key"
        if secret_key.exists():
            SECRETS.add(secret_key.read_text().strip())

    # Readiness

    def wait_ready(self) -> bool:
        """
        Wait for every readiness line; L{False} when twistd exited because a
        port was taken under it (it is reaped then).

        @raise AssertionError: when it failed otherwise, or took too long.
        """
        try:
            for pattern in self._ready:
                found = self.log.wait_for_any(
                    [pattern, r"CannotListenError"], stop_at_end=False
                )
                if found is None or found.group(0) == "CannotListenError":
                    code = stop(self.process, must_obey=False)
                    self.log.wait_closed()
                    if _PORT_TAKEN.search(self.log.text()):
                        return False
                    raise AssertionError(
                        f"{self.log.name} exited with {code} while starting; "
                        f"its log:\n{self.log.text()}"
                    )
        except BaseException:
            stop(self.process, signal.SIGKILL, must_obey=False)
            raise
        return True

    async def wait_for(self, pattern: str, since: int = 0) -> re.Match[str]:
        """
        L{OutputWatcher.wait_for} for a pytest-twisted test: the reactor
        keeps running while it waits.
        """
        found: re.Match[str] = await deferToThread(self.log.wait_for, pattern, since)
        return found

    # Tokens

    def mint(self, host: str, port: int, **fields: Any) -> str:
        """
        A fresh token for C{host:port} from this process's token API (safe
        to call from several threads; blocking, so not from the reactor).
        """
        with self._http_lock:
            token = self._mint(host=host, port=port, **fields)
        return self.remember(token)

    def _mint(self, **fields: Any) -> str:
        try:
            return self._mint_once(**fields)
        except (http.client.HTTPException, ConnectionError):
            return self._mint_once(**fields)  # the API closed an idle connection

    def _mint_once(self, **fields: Any) -> str:
        if self._http is None:
            self._http = http.client.HTTPConnection(
                "127.0.0.1", self.api_port, timeout=30
            )
        try:
            return str(mint_blocking(self._http, self.api_key, **fields)["token"])
        except (http.client.HTTPException, ConnectionError):
            self._http.close()
            self._http = None
            raise

    async def mint_async(
        self, host: str, port: int, *, api_url: str | None = None, **fields: Any
    ) -> str:
        """
        L{mint} for a pytest-twisted test; C{api_url} asks another token
        API instead (one in front of this one, say), the token still
        remembered here.
        """
        token = await mint(
            api_url or self.api_url, self.api_key, host=host, port=port, **fields
        )
        return self.remember(token)

    def remember(self, token: str) -> str:
        """
        Count C{token} among those minted through this process: no log may
        hold it.
        """
        SECRETS.add(token)
        self.minted.append(token)
        return token

    # The txvnc command

    def cli(
        self, *args: str, api_url: str | None = None, key_file: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{txvnc --api-url ... --api-key-file ... ARGS} against this
        process's token API (or C{api_url}, with C{key_file}).
        """
        return run_cli(
            "--api-url", api_url or self.api_url,
            "--api-key-file", str(key_file or self.key_file),
            *args,
            cwd=self.directory,
        )  # fmt: skip

    def create_console(
        self, host: str, port: int, instance_uuid: str, *options: str
    ) -> Console:
        """
        Mint a console with C{txvnc console create} (and any of its
        C{options}) and read its URL; its token is remembered.
        """
        args = ["--host", host, "--port", str(port), "--instance-uuid", instance_uuid]
        console = Console.created(self.cli("console", "create", *args, *options))
        self.remember(console.token)
        return console

    # What its log and /proc say

    def rss_kib(self) -> int:
        """
        The process's resident memory, from /proc.
        """
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
        assert found, status
        return int(found.group(1))

    def loud_lines(self, since: int = 0) -> list[str]:
        """
        Error-level lines and tracebacks logged from C{since} on.
        """
        loud = re.compile(r"#(error|critical)\]|Traceback|Unhandled")
        return [line for line in self.log.lines(since) if loud.search(line)]

    def close_reason(self, client_port: int, since: int = 0) -> str:
        """
        Why the proxy says the console of the browser at C{client_port}
        closed, from its close line (waiting for it).
        """
        found = self.log.wait_for(
            rf"127\.0\.0\.1:{client_port}: console closed, instance \S+, "
            r"target \S+: (.*); \d+ bytes to VNC",
            since,
        )
        return found.group(1)

    # Signals and the end

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def ended(self, timeout: float = STOP_TIMEOUT) -> int:
        """
        Its exit status, once it has exited by itself (after a signal the
        test sent), for a pytest-twisted test.
        """
        code: int = await deferToThread(self.process.wait, timeout)
        self.log.wait_closed()
        return code

    def stop(self, *, clean: bool = True) -> int:
        """
        SIGTERM, SIGKILL after L{STOP_TIMEOUT} (which fails the test), reaped;
        its exit status.

        With C{clean}, the stop must have been clean: exit status 0 or
        -SIGTERM (twistd ends itself with the signal it got, so its parent
        sees why), "Server Shut Down.", no traceback and no minted token in
        its log.
        """
        if self._http is not None:
            self._http.close()
            self._http = None
        code = stop(self.process)
        self.log.wait_closed()
        if clean:
            self.check_stopped_cleanly(code)
        return code

    def kill(self) -> int:
        """
        SIGKILL at once if it still runs, reaped: the clean-up of a test that
        failed before it could stop it properly.
        """
        code = stop(self.process, signal.SIGKILL, must_obey=False)
        self.log.wait_closed()
        return code

    def check_stopped_cleanly(self, code: int) -> None:
        """
        Assert that it stopped cleanly with exit status C{code} (see L{stop}).
        """
        text = self.log.text()
        name = self.log.name
        assert code in (0, -signal.SIGTERM), f"{name} exited with {code}:\n{text}"
        assert "Server Shut Down." in text, f"{name} did not stop cleanly:\n{text}"
        assert "Traceback" not in text, f"{name} logged a traceback:\n{text}"
        leaked = [token for token in self.minted if token in text]
        assert not leaked, f"{len(leaked)} minted token(s) appear in the log of {name}"

    def rerun(self) -> Twistd:
        """
        The same command again, in the same directory on the same ports
        (after L{stop}), once it listens; the same kind of L{Twistd}.
        """
        argv = [str(a) for a in self.process.args]
        process, log, log_path = _run(
            argv, self.directory, self.name, follow=self.logfile
        )
        again = dataclasses.replace(
            self,
            process=process,
            log=log,
            log_path=log_path,
            minted=list(self.minted),
            _http=None,
            _http_lock=threading.Lock(),
        )
        assert again.wait_ready(), f"a port of {log.name} was taken meanwhile"
        return again


def _log_path(directory: Path, name: str | None) -> Path:
    """
    A new C{twistd*.log} file name in C{directory}.
    """
    stem = f"twistd-{name}" if name else "twistd"
    path = directory / f"{stem}.log"
    number = 1
    while path.exists():
        number += 1
        path = directory / f"{stem}-{number}.log"
    return path


def _run(
    argv: list[str],
    directory: Path,
    name: str | None,
    open_files: int | None = None,
    follow: Path | None = None,
) -> tuple[subprocess.Popen[str], OutputWatcher, Path]:
    """
    Start C{argv} in C{directory}, its output watched and kept in a new log
    file; with C{follow}, the file it logs to is watched instead (followed
    by name until it exits), and its own output kept beside.
    """
    log_path = _log_path(directory, name)
    process = spawn(argv, cwd=directory, open_files=open_files)
    assert process.stdout is not None
    label = f"twistd txvnc ({name})" if name else "twistd txvnc"
    if follow is None:
        return process, OutputWatcher(process.stdout, label, log_path), log_path
    OutputWatcher(process.stdout, f"{label} stdout", log_path.with_suffix(".stdout"))
    tail = spawn(
        ["tail", f"--pid={process.pid}", "-s", "0.1", "-n", "+1", "-F", follow],
        stderr=subprocess.DEVNULL,
    )
    assert tail.stdout is not None
    return process, OutputWatcher(tail.stdout, label, log_path), log_path


def launch(
    directory: Path,
    *args: str,
    proxy: bool = True,
    api: bool = True,
    workers: int = 1,
    listen: str = LOOPBACK,
    api_listen: str = LOOPBACK,
    store: str | None = "memory:",
    base_url: str | None = None,
    web: Path | None = None,
    page: bool = True,
    api_key: str | None = None,
    api_key_file: Path | None = None,
    audit_log: bool = False,
    ready: Sequence[str] = (),
    name: str | None = None,
    open_files: int | None = None,
    logfile: bool = False,
) -> Twistd:
    """
    Start C{twistd -n txvnc} once, on fresh ports, without waiting: see
    L{start_twistd} for the arguments; L{Twistd.wait_ready} says whether it
    came up.
    """
    require(TWISTD.is_file(), f"twistd in {BIN}")
    proxy_port, api_port = free_ports(2)
    if not proxy:
        proxy_port = 0
    if not api:
        api_port = 0
    key_file = api_key_file or directory / "txvnc-api.key"
    if api_key is not None:
        key_file.write_text(api_key + "\n")
        key_file.chmod(0o600)
    if not page and web is None:
        web = directory / "web"
        web.mkdir(exist_ok=True)
    if base_url is None:
        scheme = "https" if listen.startswith("ssl:") else "http"
        base_url = f"{scheme}://127.0.0.1:{proxy_port or 1}"
    else:
        base_url = base_url.format(port=proxy_port)
    follow = directory / "twistd-file.log" if logfile else None
    argv = [
        str(TWISTD), "-n", "--pidfile=",
        *(["--logfile", str(follow)] if follow else []),
        "txvnc",
        "--api-key-file", str(key_file),
        "--allowed-target", ANY_LOOPBACK_TARGET,
    ]  # fmt: skip
    patterns = []
    if proxy:
        argv += ["--listen", listen.format(port=proxy_port)]
        if web is not None:
            argv += ["--web", str(web)]
        else:
            require((NOVNC / "core" / "rfb.js").is_file(), f"noVNC in {NOVNC} (npm ci)")
            argv += ["--novnc", str(NOVNC)]
        if workers > 1:
            argv += ["--workers", str(workers)]
            patterns += [
                rf"txvnc-worker-{n}\] ConsoleSite (\(TLS\) )?starting on {proxy_port}\b"
                for n in range(1, workers + 1)
            ]
        else:
            patterns.append(rf"starting on {proxy_port}\b")
    else:
        argv.append("--no-proxy")
    if api:
        argv += [
            "--api-listen", api_listen.format(port=api_port),
            "--base-url", base_url,
        ]  # fmt: skip
        if store is not None:
            argv += ["--store", store]
        patterns.append(rf"starting on {api_port}\b")
    else:
        argv.append("--no-api")
    patterns.append(r"signals: SIGTERM shuts down gracefully")
    patterns += ready
    audit_path = None
    if audit_log:
        audit_path = directory / f"{name or 'twistd'}-audit.jsonl"
        argv += ["--audit-log", str(audit_path)]
    argv += args
    process, log, log_path = _run(argv, directory, name, open_files, follow)
    return Twistd(
        process,
        log,
        log_path,
        directory,
        proxy_port,
        api_port,
        key_file,
        base_url,
        name,
        audit_path=audit_path,
        logfile=follow,
        _ready=patterns,
    )


def start_twistd(directory: Path, *args: str, **options: Any) -> Twistd:
    """
    Start C{twistd -n txvnc ARGS} in C{directory} and return once it is
    ready; on a port taken under it, again on new ports.

    @param proxy: run the console proxy (else C{--no-proxy}).
    @param api: run the token API (else C{--no-api}).
    @param workers: C{--workers N}; ready when every worker listens.
    @param listen: the proxy's endpoint, C{{port}} standing for its port.
    @param api_listen: the API's endpoint, likewise.
    @param store: the token store (L{None}: none given, for C{--nova-config}
        to name it).
    @param base_url: C{--base-url}, C{{port}} standing for the proxy port
        (default: http or https on 127.0.0.1 and the proxy port).
    @param web: a directory for C{--web}, instead of txvnc's page on noVNC.
    @param page: with L{False}, an empty C{--web} directory, for tests that
        need no console page (nor noVNC).
    @param api_key: the one key (both roles) to write to the keys file.
    @param api_key_file: the keys file (default: C{txvnc-api.key} in
        C{directory}, which twistd creates unless C{api_key} is given).
    @param audit_log: write an audit log, C{NAME-audit.jsonl} in
        C{directory} (L{Twistd.audit_path}).
    @param ready: more log line patterns to wait for.
    @param name: names its log file (C{twistd-NAME.log}) and its messages.
    @param open_files: its C{RLIMIT_NOFILE}, set before it starts.
    @param logfile: twistd logs to C{twistd-file.log} in C{directory}
        (C{--logfile}), which its L{Twistd.log} follows.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(PORT_TRIES):
        server = launch(directory, *args, **options)
        if server.wait_ready():
            server.register_secrets()
            return server
    raise AssertionError("every port we picked was taken before twistd bound it")


async def start_twistd_async(directory: Path, *args: str, **options: Any) -> Twistd:
    """
    L{start_twistd} for a pytest-twisted test: the reactor keeps running
    while twistd starts (the fork itself stays on the main thread).
    """
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(PORT_TRIES):
        server = launch(directory, *args, **options)
        if await deferToThread(server.wait_ready):
            server.register_secrets()
            return server
    raise AssertionError("every port we picked was taken before twistd bound it")


def stop_all(servers: Sequence[Twistd], *, clean: bool = True) -> None:
    """
    Stop every one of C{servers} (each reaped even when another fails), then
    with C{clean} check that each stopped cleanly.
    """
    codes: list[int] = []
    failed: AssertionError | None = None
    for server in servers:
        try:
            codes.append(server.stop(clean=False))
        except AssertionError as e:
            codes.append(server.process.wait())
            failed = failed or e
    if failed is not None:
        raise failed
    if clean:
        for server, code in zip(servers, codes, strict=True):
            server.check_stopped_cleanly(code)


def _twistds(value: Any, depth: int = 2) -> list[Twistd]:
    """
    The L{Twistd}s in a fixture's value: itself, or in a list, tuple or dict
    of them, or in its C{nodes} (a cluster).
    """
    if isinstance(value, Twistd):
        return [value]
    if depth == 0:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    elif not isinstance(value, list | tuple):
        nodes = getattr(type(value), "nodes", None)
        value = list(value.nodes) if isinstance(nodes, property) else []
    return [t for v in value for t in _twistds(v, depth - 1)]


def attach_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """
    Put the log of every twistd a failed test used (as a fixture) under its
    report.
    """
    for name, value in getattr(item, "funcargs", {}).items():
        for server in _twistds(value):
            report.sections.append((f"{name}: {server.log.name} log", server.log.text()))
