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
replayable; input and clipboard records are passed on as recorded.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from txvnc.client import ConsoleAuthClient, ConsoleAuthError, ConsoleAuthUnavailable
from txvnc.core.recfile import MAGIC, SERVER, NotARecording, frame, read_file
from txvnc.core.recordings import RecordingDirectory
from txvnc.rfb.replay import NotReplayable, replayable

EXPIRED = "The replay link is invalid or has expired"


def replay_stream(path: str) -> bytes:
    """
    The recording at C{path} as the replay page reads it (blocking: run in
    a thread).

    @raise NotARecording, NotReplayable, OSError: when it cannot be played.
    """
    recording = read_file(path)
    server = [d for k, _, d in recording.records if k == SERVER]
    chunks = iter(replayable(server))
    header = recording.header.to_bytes()
    out = [MAGIC, frame(0, 0, header)]
    for kind, ms, data in recording.records:
        if kind == SERVER:
            data = next(chunks)
            if not data:
                continue
        out.append(frame(kind, ms, data))
    return b"".join(out)


class ReplayResource(Resource):
    """
    C{GET /replay-data?token=R}: 200 with the replay stream, 403 for a
    token that is invalid or expired, 404 when there is no such recording
    here, 503 when the token API cannot be asked.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self, auth: ConsoleAuthClient, directory: str | None, reactor: Any
    ) -> None:
        super().__init__()
        self._auth = auth
        self._directory = RecordingDirectory(directory) if directory else None
        self._reactor = reactor

    def render_GET(self, request: Request) -> bytes | int:
        args: dict[bytes, list[bytes]] = request.args or {}
        token = args.get(b"token", [b""])[0].decode("utf-8", "replace")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = Deferred.fromCoroutine(self._answer(token))

        def send(result: tuple[int, str, bytes]) -> None:
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

    async def _answer(self, token: str) -> tuple[int, str, bytes]:
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
        pool = self._reactor.getThreadPool()
        try:
            body = await deferToThreadPool(self._reactor, pool, replay_stream, path)
        except FileNotFoundError:
            return _error(404, "no such recording")
        except (NotARecording, NotReplayable, OSError) as e:
            self._log.warn(
                "recording {recording} cannot be replayed: {why}",
                recording=recording_id,
                why=str(e),
            )
            return _error(422, f"this recording cannot be replayed: {e}")
        return 200, "application/octet-stream", body


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
