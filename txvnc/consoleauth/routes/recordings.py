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

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from twisted.web.iweb import IRequest

from txvnc.consoleauth.api import TokenAPI
from txvnc.consoleauth.keys import ADMIN, PROXY
from txvnc.consoleauth.recordings import RecordingArchive
from txvnc.consoleauth.routes.access import Endpoint, Handler, requires
from txvnc.consoleauth.routes.answers import Answer, StreamedBody, query
from txvnc.consoleauth.routes.app import app
from txvnc.core.recordings import public
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


class _NoSuch(Exception):
    """No such recording: 404."""


def _route(path: str, method: str, role: str) -> Callable[[Handler], Endpoint]:
    """
    A recordings route (L{requires} C{role}): 404 without C{--record-dir},
    and for no such recording (L{_NoSuch}, or its file gone while read).
    """

    def decorate(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def route(api: TokenAPI, *args: Any, **kwargs: Any) -> Answer:
            if api.recordings is None:
                return 404, {"error": NOT_CONFIGURED}
            try:
                return await handler(api, *args, **kwargs)
            except (_NoSuch, FileNotFoundError):
                return 404, {"error": NO_SUCH}

        endpoint = requires(role)(route)
        app.route(path, methods=[method])(endpoint)
        return endpoint

    return decorate


def _archive(api: TokenAPI) -> RecordingArchive:
    assert api.recordings is not None  # _route answered 404 without
    return api.recordings


async def _metadata(archive: RecordingArchive, recording_id: str) -> dict[str, Any]:
    meta = await archive.run(archive.directory.metadata, recording_id)
    if meta is None:
        raise _NoSuch()
    return meta


@_route("/v1/recordings", "GET", ADMIN)
async def list_recordings(
    api: TokenAPI, request: IRequest, roles: frozenset[str]
) -> Answer:
    archive = _archive(api)
    try:
        since = _time(query(request, "since"), "since")
        until = _time(query(request, "until"), "until")
    except ValueError as e:
        return 400, {"error": str(e)}
    instance_uuid = query(request, "instance_uuid") or None
    found = await archive.run(archive.directory.find, instance_uuid, since, until)
    return 200, {"recordings": found}


@_route("/v1/recordings/<recording_id>", "GET", ADMIN)
async def show_recording(
    api: TokenAPI, request: IRequest, roles: frozenset[str], recording_id: str
) -> Answer:
    archive = _archive(api)
    return 200, public(await _metadata(archive, recording_id))


@_route("/v1/recordings/<recording_id>/file", "GET", ADMIN)
async def download_recording(
    api: TokenAPI, request: IRequest, roles: frozenset[str], recording_id: str
) -> Answer:
    archive = _archive(api)
    path = archive.directory.path_for(recording_id)
    if path is None:
        raise _NoSuch()
    chunks = await archive.run(FileChunks, path)
    api.audit_event(request, roles, "recording.downloaded", recording_id=recording_id)
    request.setHeader(
        b"Content-Disposition",
        b'attachment; filename="' + (recording_id + ".txrec").encode("ascii") + b'"',
    )
    # Sent a read at a time as the client takes it: a recording of hours
    # costs the API no more memory than one of seconds.
    return 200, StreamedBody(ThreadedBody(chunks, archive.run), chunks.size)


@_route("/v1/recordings/<recording_id>", "DELETE", ADMIN)
async def delete_recording(
    api: TokenAPI, request: IRequest, roles: frozenset[str], recording_id: str
) -> Answer:
    archive = _archive(api)
    if not await archive.run(archive.directory.delete, recording_id):
        raise _NoSuch()
    api.audit_event(request, roles, "recording.deleted", recording_id=recording_id)
    return 204, None


@_route("/v1/recordings/<recording_id>/replay", "POST", ADMIN)
async def replay_recording(
    api: TokenAPI, request: IRequest, roles: frozenset[str], recording_id: str
) -> Answer:
    archive = _archive(api)
    meta = await _metadata(archive, recording_id)
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


@_route("/v1/replays/<token>", "GET", PROXY)
async def check_replay(
    api: TokenAPI, request: IRequest, roles: frozenset[str], token: str
) -> Answer:
    archive = _archive(api)
    found = archive.links.check(token, api.clock.seconds())
    if found is None:
        return 404, {"error": "the replay link is invalid or has expired"}
    recording_id, expires_at = found
    return 200, {"recording_id": recording_id, "expires_at": iso8601(expires_at)}
