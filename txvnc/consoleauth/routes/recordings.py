"""
Console recordings (docs/recording.md): list, read, download, delete and
replay them (admin); tell a proxy which recording a replay link opens
(proxy).

    GET    /v1/recordings[?instance_uuid=U&since=T&until=T]
    GET    /v1/recordings/{id}
    GET    /v1/recordings/{id}/file
    DELETE /v1/recordings/{id}
    POST   /v1/recordings/{id}/replay
    GET    /v1/replays/{token}

Every download and replay link is in the audit log. Without
C{--record-dir} every route answers 404.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from urllib.parse import quote

from twisted.web.iweb import IRequest

from txvnc.consoleauth.api import TokenAPI
from txvnc.consoleauth.keys import ADMIN, PROXY
from txvnc.consoleauth.recordings import RecordingArchive
from txvnc.consoleauth.routes.access import requires
from txvnc.consoleauth.routes.answers import Answer, StreamedBody, query
from txvnc.consoleauth.routes.app import app
from txvnc.core.streamed import FileChunks, ThreadedBody
from txvnc.core.tokens import iso8601

NOT_CONFIGURED = "recordings are not kept here (no --record-dir)"
NO_SUCH = "no such recording"


#: The latest time a filter may name (POSIX seconds, year 5138).
MAX_TIME = 1e11


def _time(value: str | None, name: str) -> float | None:
    """
    A time parameter: POSIX seconds, or ISO 8601 (C{2026-12-06T11:00:00Z}).

    @raise ValueError: naming the parameter.
    """
    if value is None:
        return None
    why = f"{name} must be POSIX seconds (0 to {MAX_TIME:.0f}) or an ISO 8601 time"
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(why) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_TIME):
        raise ValueError(why)
    return seconds


def _archive(api: TokenAPI) -> RecordingArchive | None:
    return api.recordings


@app.route("/v1/recordings", methods=["GET"])
@requires(ADMIN)
async def list_recordings(
    api: TokenAPI, request: IRequest, roles: frozenset[str]
) -> Answer:
    archive = _archive(api)
    if archive is None:
        return 404, {"error": NOT_CONFIGURED}
    try:
        since = _time(query(request, "since"), "since")
        until = _time(query(request, "until"), "until")
    except ValueError as e:
        return 400, {"error": str(e)}
    instance_uuid = query(request, "instance_uuid") or None
    found = await archive.run(archive.directory.find, instance_uuid, since, until)
    return 200, {"recordings": found}


@app.route("/v1/recordings/<recording_id>", methods=["GET"])
@requires(ADMIN)
async def show_recording(
    api: TokenAPI, request: IRequest, roles: frozenset[str], recording_id: str
) -> Answer:
    archive = _archive(api)
    if archive is None:
        return 404, {"error": NOT_CONFIGURED}
    meta = await archive.run(archive.directory.metadata, recording_id)
    if meta is None:
        return 404, {"error": NO_SUCH}
    return 200, {k: v for k, v in meta.items() if not k.startswith("_")}


@app.route("/v1/recordings/<recording_id>/file", methods=["GET"])
@requires(ADMIN)
async def download_recording(
    api: TokenAPI, request: IRequest, roles: frozenset[str], recording_id: str
) -> Answer:
    archive = _archive(api)
    if archive is None:
        return 404, {"error": NOT_CONFIGURED}
    path = archive.directory.path_for(recording_id)
    if path is None:
        return 404, {"error": NO_SUCH}
    try:
        chunks = await archive.run(FileChunks, path)
    except FileNotFoundError:
        return 404, {"error": NO_SUCH}
    api.audit_event(request, roles, "recording.downloaded", recording_id=recording_id)
    request.setHeader(
        b"Content-Disposition",
        b'attachment; filename="' + (recording_id + ".txrec").encode("ascii") + b'"',
    )
    # Sent a read at a time as the client takes it: a recording of hours
    # costs the API no more memory than one of seconds.
    return 200, StreamedBody(ThreadedBody(chunks, archive.run), chunks.size)


@app.route("/v1/recordings/<recording_id>", methods=["DELETE"])
@requires(ADMIN)
async def delete_recording(
    api: TokenAPI, request: IRequest, roles: frozenset[str], recording_id: str
) -> Answer:
    archive = _archive(api)
    if archive is None:
        return 404, {"error": NOT_CONFIGURED}
    if not await archive.run(archive.directory.delete, recording_id):
        return 404, {"error": NO_SUCH}
    api.audit_event(request, roles, "recording.deleted", recording_id=recording_id)
    return 204, None


@app.route("/v1/recordings/<recording_id>/replay", methods=["POST"])
@requires(ADMIN)
async def replay_recording(
    api: TokenAPI, request: IRequest, roles: frozenset[str], recording_id: str
) -> Answer:
    archive = _archive(api)
    if archive is None:
        return 404, {"error": NOT_CONFIGURED}
    meta = await archive.run(archive.directory.metadata, recording_id)
    if meta is None:
        return 404, {"error": NO_SUCH}
    expires_at = int(api.clock.seconds()) + archive.replay_ttl
    token = archive.links.make(recording_id, expires_at)
    api.audit_event(
        request,
        roles,
        "recording.replay",
        recording_id=recording_id,
        instance_uuid=meta["instance_uuid"],
        expires_at=iso8601(expires_at),
    )
    url = f"{api.base_url}/replay.html?token={quote(token, safe='')}"
    return 201, {"replay_url": url, "expires_at": iso8601(expires_at)}


@app.route("/v1/replays/<token>", methods=["GET"])
@requires(PROXY)
async def check_replay(
    api: TokenAPI, request: IRequest, roles: frozenset[str], token: str
) -> Answer:
    archive = _archive(api)
    if archive is None:
        return 404, {"error": NOT_CONFIGURED}
    found = archive.links.check(token, api.clock.seconds())
    if found is None:
        return 404, {"error": "the replay link is invalid or has expired"}
    recording_id, expires_at = found
    return 200, {"recording_id": recording_id, "expires_at": iso8601(expires_at)}
