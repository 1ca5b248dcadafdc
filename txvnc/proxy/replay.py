"""
The replay page's data: C{GET /replay-data?token=R} answers the recording a
replay token opens, ready for noVNC to play (L{txvnc.rfb.replay}).

A replay token comes from C{POST /v1/recordings/{id}/replay} (admin) and
lives minutes; the proxy asks the token API which recording it opens (its
proxy key, C{GET /v1/replays/{token}}) and reads the file from its own
C{--record-dir}, the directory every node of a deployment shares
(docs/recording.md). The page (C{replay.html}) is static.

The answer is the recording's inner stream (docs/recording.md): MAGIC, the
header and the records in order, with the server records' handshake made
replayable; input and clipboard records are passed on as recorded. It is
read from the file and sent a chunk at a time, as the page takes it
(L{txvnc.core.streamed}): a long recording costs the proxy no more memory
than a short one.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from txvnc.client import ConsoleAuthClient, ConsoleAuthError, ConsoleAuthUnavailable
from txvnc.core.recfile import (
    HEADER,
    MAGIC,
    SERVER,
    NotARecording,
    RecordReader,
    frame,
)
from txvnc.core.recordings import RecordingDirectory
from txvnc.core.streamed import Run, ThreadedBody
from txvnc.rfb.replay import HandshakeSwap, NotReplayable

EXPIRED = "The replay link is invalid or has expired"

#: About how much of the replay stream one chunk sent to the page holds.
CHUNK = 64 * 1024


class ReplayStream:
    """
    The recording at C{path} as the replay page reads it, in chunks of
    about L{CHUNK} bytes (one record more at most), read from the file as
    they are sent: memory holds the recorded handshake, one chunk and one
    record, whatever the recording's length. Blocking (file reads): made
    and read in a thread.

    @raise NotARecording, NotReplayable, OSError: from the constructor,
        when it cannot be played (before anything is sent).
    """

    def __init__(self, path: str, chunk: int = CHUNK) -> None:
        self._file = open(path, "rb")  # closed by close(), at the end
        try:
            reader = RecordReader.open(self._file)
            self._records = iter(reader)
            self._swap = HandshakeSwap()
            #: The records read to see through the handshake, to send first.
            self._held: deque[tuple[int, int, bytes]] = deque()
            for record in self._records:
                self._held.append(record)
                if record[0] == SERVER and self._swap.look(record[2]):
                    break
            else:
                self._swap.finish()
        except BaseException:
            self._file.close()
            raise
        self._chunk = chunk
        self._out = [MAGIC, frame(HEADER, 0, reader.header.to_bytes())]

    def __iter__(self) -> ReplayStream:
        return self

    def __next__(self) -> bytes:
        out = self._out
        size = sum(map(len, out))
        while size < self._chunk:
            if self._held:
                kind, ms, data = self._held.popleft()
            else:
                record = next(self._records, None)
                if record is None:
                    break
                kind, ms, data = record
            if kind == SERVER:
                data = self._swap.replace(data)
                if not data:
                    continue
            out.append(frame(kind, ms, data))
            size += len(out[-1])
        if not out:
            self.close()
            raise StopIteration
        self._out = []
        return b"".join(out)

    def close(self) -> None:
        self._file.close()


def replay_stream(path: str) -> bytes:
    """The whole replay stream of the recording at C{path} (tools, tests)."""
    return b"".join(ReplayStream(path))


class ReplayResource(Resource):
    """
    C{GET /replay-data?token=R}: 200 with the replay stream, 403 for a
    token that is invalid or expired, 404 when there is no such recording
    here, 503 when the token API cannot be asked.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        auth: ConsoleAuthClient,
        directory: str | None,
        reactor: Any,
        run: Run | None = None,
    ) -> None:
        """
        @param run: runs the file reads off the reactor thread (default:
            C{reactor}'s thread pool).
        """
        super().__init__()
        self._auth = auth
        self._directory = RecordingDirectory(directory) if directory else None
        self._run: Run = run or (
            lambda f, *args: deferToThreadPool(
                reactor, reactor.getThreadPool(), f, *args
            )
        )

    def render_GET(self, request: Request) -> bytes | int:
        args: dict[bytes, list[bytes]] = request.args or {}
        token = args.get(b"token", [b""])[0].decode("utf-8", "replace")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = Deferred.fromCoroutine(self._answer(token))

        def send(result: tuple[int, str, bytes] | ReplayStream) -> None:
            if isinstance(result, ReplayStream):
                if gone:
                    self._run(result.close)
                    return
                request.setResponseCode(200)
                request.setHeader(b"Content-Type", b"application/octet-stream")
                ThreadedBody(result, self._run).send(request)
                return
            if gone:
                return
            status, kind, body = result
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", kind.encode("ascii"))
            request.setHeader(b"Content-Length", b"%d" % (len(body),))
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            self._log.failure("the replay data request failed", failure)
            send(_error(500, "internal error"))

        d.addCallback(send).addErrback(failed)
        return NOT_DONE_YET

    async def _answer(self, token: str) -> tuple[int, str, bytes] | ReplayStream:
        """
        An error to answer, or the recording to stream: opened, and its
        handshake seen through, before anything is answered.
        """
        if not token or len(token) > 512:
            return _error(400, "a replay token is required")
        try:
            recording_id = await self._recording_of(token)
        except (ConsoleAuthUnavailable, ConsoleAuthError) as e:
            self._log.error("cannot check a replay token: {why}", why=str(e))
            return _error(503, "The recording service cannot check the link right now")
        if recording_id is None:
            return _error(403, EXPIRED)
        path = self._directory.path_for(recording_id) if self._directory else None
        if path is None:
            return _error(404, "this proxy has no such recording (--record-dir)")
        try:
            stream: ReplayStream = await self._run(ReplayStream, path)
        except FileNotFoundError:
            return _error(404, "no such recording")
        except (NotARecording, NotReplayable, OSError) as e:
            self._log.warn(
                "recording {recording} cannot be replayed: {why}",
                recording=recording_id,
                why=str(e),
            )
            return _error(422, f"this recording cannot be replayed: {e}")
        return stream

    async def _recording_of(self, token: str) -> str | None:
        """
        The recording a replay token opens, or L{None} when it is invalid
        or expired: the token API says (C{GET /v1/replays/{token}}).
        """
        path = "/v1/replays/" + quote(token, safe="")
        status, body = await self._auth.call("GET", path)
        if status == 200 and isinstance(body, dict) and "recording_id" in body:
            return str(body["recording_id"])
        if status == 404:
            return None
        if status in (401, 403):
            raise ConsoleAuthError(status, "the proxy's key was refused")
        raise ConsoleAuthUnavailable(f"token API sent an unexpected answer ({status})")


def _error(status: int, message: str) -> tuple[int, str, bytes]:
    body = json.dumps({"error": message}).encode("utf-8")
    return status, "application/json", body
