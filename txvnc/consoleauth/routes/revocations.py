"""
Revocations: what the control plane revokes (admin) and the feed every
proxy follows to close the consoles it must (proxy).

    DELETE /v1/tokens/{token}                revoke a token
    DELETE /v1/instances/{instance}/tokens   revoke every token of an instance
    GET    /v1/revocations?after=N           the revocation feed

Closing one console (C{DELETE /v1/sessions/{id}}) enters the same feed; it
is with the console registry, in L{txvnc.consoleauth.routes.sessions}.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from txvnc.consoleauth.api import TokenAPI
from txvnc.consoleauth.keys import ADMIN, PROXY
from txvnc.consoleauth.routes.access import requires
from txvnc.consoleauth.routes.answers import Answer, query
from txvnc.consoleauth.routes.app import app
from txvnc.consoleauth.tokens import INSTANCE_NAME_RULE, is_instance_name
from txvnc.core.tokens import token_hash, token_ref


@app.route("/v1/tokens/<token>", methods=["DELETE"])
@requires(ADMIN)
async def revoke(
    api: TokenAPI, request: IRequest, roles: frozenset[str], token: str
) -> Answer:
    hashed = token_hash(token)
    existed = await api.store.remove(hashed)
    # Even an unknown (or expired) token goes into the feed: a console
    # opened with it may still be open.
    await api.store.add_revocation("token", hashed, api.clock.seconds())
    api.log.info(
        "revoked token {token_ref} (known: {existed})",
        token_ref=token_ref(token),
        existed=existed,
    )
    api.audit_event(request, roles, "token.revoked", token_hash=hashed, known=existed)
    return 204, None


@app.route("/v1/instances/<instance_uuid>/tokens", methods=["DELETE"])
@requires(ADMIN)
async def revoke_instance(
    api: TokenAPI, request: IRequest, roles: frozenset[str], instance_uuid: str
) -> Answer:
    if not is_instance_name(instance_uuid):
        # No token could have been minted for it: the mint's answer.
        return 400, {"error": INSTANCE_NAME_RULE}
    count = await api.store.remove_instance(instance_uuid)
    await api.store.add_revocation("instance", instance_uuid, api.clock.seconds())
    api.log.info(
        "revoked {count} token(s) of instance {instance_uuid}",
        count=count,
        instance_uuid=instance_uuid,
    )
    api.audit_event(
        request, roles, "instance.revoked", instance_uuid=instance_uuid, tokens=count
    )
    return 204, None


@app.route("/v1/revocations", methods=["GET"])
@requires(PROXY)
async def revocation_feed(
    api: TokenAPI, request: IRequest, roles: frozenset[str]
) -> Answer:
    after = query(request, "after")
    if after is None:
        after = "0"
    if not after.isdigit() or len(after) > 18:
        return 400, {"error": "after must be a non-negative integer"}
    # A cursor above "cursor" in the answer means the feed restarted
    # (a memory store's process did); the caller starts again from 0.
    latest, entries = await api.store.revocations(int(after))
    return 200, {"cursor": latest, "revocations": [e.to_json() for e in entries]}
