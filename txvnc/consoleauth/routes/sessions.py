"""
The console registry: each proxy reports its open consoles (proxy); the
control plane lists them and closes one (admin).

    PUT    /v1/proxies/{node}/sessions       a proxy's open consoles
    PATCH  /v1/proxies/{node}/sessions       what changed since its last report
    GET    /v1/sessions[?instance_uuid=U]    list open consoles
    DELETE /v1/sessions/{id}                 close one console
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from txvnc.consoleauth.api import MAX_REPORT_BODY, TokenAPI
from txvnc.consoleauth.keys import ADMIN, PROXY
from txvnc.consoleauth.routes.access import requires
from txvnc.consoleauth.routes.answers import Answer, query, read_json
from txvnc.consoleauth.routes.app import app
from txvnc.consoleauth.sessions import MAX_FIELD_LENGTH, SessionRecord
from txvnc.consoleauth.tokens import InvalidRequest

#: How long a proxy's report stays listed unless it reports again.
DEFAULT_REPORT_TTL = 30
MAX_REPORT_TTL = 3600


@app.route("/v1/proxies/<node>/sessions", methods=["PUT"])
@requires(PROXY)
async def report_sessions(
    api: TokenAPI, request: IRequest, roles: frozenset[str], node: str
) -> Answer:
    try:
        ttl, sessions = _parse_report(read_json(request, MAX_REPORT_BODY), node)
    except InvalidRequest as e:
        return 400, {"error": str(e)}
    await api.store.put_sessions(node, sessions, api.clock.seconds(), ttl)
    return 204, None


@app.route("/v1/proxies/<node>/sessions", methods=["PATCH"])
@requires(PROXY)
async def update_sessions(
    api: TokenAPI, request: IRequest, roles: frozenset[str], node: str
) -> Answer:
    """
    A proxy's changes since its last report and the digest of what it holds
    now; 409 when the API's copy, changed the same way, has another digest
    (or there is none): the proxy then sends everything (PUT). So a proxy
    that opens a few consoles a second sends those, not its whole list.
    """
    try:
        ttl, added, removed, digest = _parse_changes(
            read_json(request, MAX_REPORT_BODY), node
        )
    except InvalidRequest as e:
        return 400, {"error": str(e)}
    held = await api.store.update_sessions(
        node, added, removed, api.clock.seconds(), ttl
    )
    if held != digest:
        return 409, {"error": RESEND_ALL}
    return 204, None


#: The 409 of a change report that does not add up: send the whole list.
RESEND_ALL = "the API's copy of this proxy's consoles differs; send them all (PUT)"


def _parse_changes(
    body: object, node: str
) -> tuple[int, list[SessionRecord], list[str], str]:
    """
    A change report's time to live, added consoles, removed ids and digest.

    @raise InvalidRequest: saying what is wrong with it.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be an object with a digest")
    extra = sorted(set(body) - {"ttl", "added", "removed", "digest"})
    if extra:
        raise InvalidRequest(f"unknown field: {extra[0][:40]}")
    digest = body.get("digest")
    if not isinstance(digest, str) or not 0 < len(digest) <= 64:
        raise InvalidRequest("digest must be a string")
    removed = body.get("removed", [])
    if not isinstance(removed, list) or not all(
        isinstance(i, str) and 0 < len(i) <= MAX_FIELD_LENGTH for i in removed
    ):
        raise InvalidRequest("removed must be a list of console ids")
    added = body.get("added", [])
    if not isinstance(added, list):
        raise InvalidRequest("added must be a list of consoles")
    ttl, sessions = _parse_report(
        {"ttl": body.get("ttl", DEFAULT_REPORT_TTL), "sessions": added}, node
    )
    return ttl, sessions, removed, digest


def _parse_report(body: object, node: str) -> tuple[int, list[SessionRecord]]:
    """
    A report's time to live and consoles.

    @raise InvalidRequest: saying what is wrong with it.
    """
    if not isinstance(body, dict) or not isinstance(body.get("sessions"), list):
        raise InvalidRequest('the body must be {"sessions": [...]}')
    extra = sorted(set(body) - {"ttl", "sessions"})
    if extra:
        raise InvalidRequest(f"unknown field: {extra[0][:40]}")
    ttl = body.get("ttl", DEFAULT_REPORT_TTL)
    if (
        not isinstance(ttl, int)
        or isinstance(ttl, bool)
        or not (1 <= ttl <= MAX_REPORT_TTL)
    ):
        raise InvalidRequest(f"ttl must be an integer from 1 to {MAX_REPORT_TTL}")
    sessions = []
    for item in body["sessions"]:
        if not isinstance(item, dict):
            raise InvalidRequest("each session must be an object")
        try:
            sessions.append(SessionRecord.from_dict({**item, "node": node}))
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
    return ttl, sessions


@app.route("/v1/sessions", methods=["GET"])
@requires(ADMIN)
async def list_sessions(
    api: TokenAPI, request: IRequest, roles: frozenset[str]
) -> Answer:
    instance_uuid = query(request, "instance_uuid")
    found = await api.store.sessions(api.clock.seconds())
    if instance_uuid:
        found = [s for s in found if s.instance_uuid == instance_uuid]
    return 200, {"sessions": [s.public() for s in found]}


@app.route("/v1/sessions/<session_id>", methods=["DELETE"])
@requires(ADMIN)
async def kill_session(
    api: TokenAPI, request: IRequest, roles: frozenset[str], session_id: str
) -> Answer:
    found = [
        s for s in await api.store.sessions(api.clock.seconds()) if s.id == session_id
    ]
    if not found:
        return 404, {"error": "no such console session"}
    await api.store.add_revocation("session", session_id, api.clock.seconds())
    session = found[0]
    api.log.info(
        "closing console {session_id} of instance {instance_uuid} on {node}",
        session_id=session_id,
        instance_uuid=session.instance_uuid,
        node=session.node,
    )
    api.audit_event(
        request,
        roles,
        "session.killed",
        session_id=session_id,
        instance_uuid=session.instance_uuid,
        target=f"{session.host}:{session.port}",
        token_hash=session.token_hash,
        proxy=session.node,
    )
    return 204, None
