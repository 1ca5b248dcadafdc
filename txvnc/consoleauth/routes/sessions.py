"""
The console registry: each proxy reports its open consoles (proxy); the
control plane lists them and closes one (admin).

    PUT    /v1/proxies/{node}/sessions       a proxy's open consoles
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
from txvnc.consoleauth.sessions import SessionRecord
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
