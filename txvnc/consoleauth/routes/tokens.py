"""
Tokens: mint (admin), list (admin), check (any key) and use (proxy).

    POST   /v1/tokens                    mint a token
    GET    /v1/tokens[?instance_uuid=U]  list live tokens (no secrets)
    GET    /v1/tokens/{token}            check a token
    POST   /v1/tokens/{token}/use        take a token for a console

Checking and using are what a proxy asks for every console it opens.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote

from twisted.web.iweb import IRequest

from txvnc.consoleauth.api import TokenAPI
from txvnc.consoleauth.keys import ADMIN, PROXY
from txvnc.consoleauth.routes.access import ANY_KEY, requires
from txvnc.consoleauth.routes.answers import Answer, query, read_json
from txvnc.consoleauth.routes.app import app
from txvnc.consoleauth.secretbox import (
    PLAIN,
    SecretError,
    reveal_password,
    seal_options,
)
from txvnc.consoleauth.tokens import (
    INSTANCE_NAME_RULE,
    InvalidRequest,
    TokenRecord,
    is_instance_name,
    new_token,
    parse_token_request,
)
from txvnc.core.tokens import iso8601, token_hash, token_ref
from txvnc.core.unixpaths import real_unix_target


@app.route("/v1/tokens", methods=["POST"])
@requires(ADMIN)
async def mint(api: TokenAPI, request: IRequest, roles: frozenset[str]) -> Answer:
    try:
        wanted = parse_token_request(read_json(request), api.max_ttl)
    except InvalidRequest as e:
        return 400, {"error": str(e)}
    unix_path = wanted.options.get("unix_path")
    if unix_path is None and not api.policy.allows(wanted.host, wanted.port):
        api.log.warn(
            "refused to mint a token for {host}:{port} (instance "
            "{instance_uuid}): outside the target policy",
            host=wanted.host,
            port=wanted.port,
            instance_uuid=wanted.instance_uuid,
        )
        api.audit_event(
            request,
            roles,
            "token.refused",
            instance_uuid=wanted.instance_uuid,
            target=f"{wanted.host}:{wanted.port}",
            reason="target not allowed",
        )
        return 403, {
            "error": f"target {wanted.host}:{wanted.port} is not allowed by the "
            "target policy"
        }

    # The real path, not only the string: a link inside an allowed
    # directory may lead to any socket on the host.
    if unix_path is not None and (
        real_unix_target(unix_path, api.allowed_unix_dirs) is None
    ):
        return 403, {"error": "unix_path is not under an allowed directory"}

    token = new_token()
    record = wanted.to_record(token, api.clock.seconds())
    try:
        record = replace(record, options=seal_options(record.options, api.secrets))
    except SecretError as e:
        return 400, {"error": str(e)}
    await api.store.add(record)
    api.log.info(
        "minted token {token_ref} for instance {instance_uuid}: "
        "{console_type} console of {host}:{port}, expires {expires_at}"
        "{single_use}",
        token_ref=token_ref(token),
        instance_uuid=record.instance_uuid,
        console_type=record.console_type,
        host=record.host,
        port=record.port,
        expires_at=iso8601(record.expires_at),
        single_use=", single use" if record.single_use else "",
    )
    api.audit_event(
        request,
        roles,
        "token.minted",
        instance_uuid=record.instance_uuid,
        target=f"{record.host}:{record.port}",
        token_hash=record.token_hash,
        expires_at=iso8601(record.expires_at),
        single_use=record.single_use,
    )
    return 201, {
        "token": token,
        "access_url": f"{api.base_url}/vnc_auto.html?token={quote(token)}",
        "expires_at": iso8601(record.expires_at),
        "instance_uuid": record.instance_uuid,
        "console_type": record.console_type,
        "single_use": record.single_use,
    }


@app.route("/v1/tokens", methods=["GET"])
@requires(ADMIN)
async def list_tokens(
    api: TokenAPI, request: IRequest, roles: frozenset[str]
) -> Answer:
    instance_uuid = query(request, "instance_uuid")
    if instance_uuid and not is_instance_name(instance_uuid):
        return 400, {"error": INSTANCE_NAME_RULE}
    records = await api.store.list_tokens(instance_uuid or None, api.clock.seconds())
    return 200, {"tokens": [r.metadata() for r in records]}


@app.route("/v1/tokens/<token>", methods=["GET"])
@requires(ANY_KEY)
async def check(
    api: TokenAPI, request: IRequest, roles: frozenset[str], token: str
) -> Answer:
    record = await api.store.get(token_hash(token), api.clock.seconds())
    if record is None:
        return _not_granted(api, request, roles, token, "token.check_failed")
    return _connect_info(api, token, record, roles)


@app.route("/v1/tokens/<token>/use", methods=["POST"])
@requires(PROXY)
async def use(
    api: TokenAPI, request: IRequest, roles: frozenset[str], token: str
) -> Answer:
    # Read before the token is taken: every revocation the console must
    # obey has a larger number (docs/revocation.md).
    cursor = await api.store.revocation_cursor()
    record = await api.store.use(token_hash(token), api.clock.seconds())
    if record is None:
        return _not_granted(api, request, roles, token, "token.use_failed")
    if record.single_use:
        api.audit_event(
            request,
            roles,
            "token.used",
            instance_uuid=record.instance_uuid,
            target=f"{record.host}:{record.port}",
            token_hash=record.token_hash,
        )
    status, info = _connect_info(api, token, record, roles)
    if status == 200:
        info["revocation_cursor"] = cursor
    return status, info


def _not_granted(
    api: TokenAPI, request: IRequest, roles: frozenset[str], token: str, event: str
) -> Answer:
    """
    The one answer for an unknown, expired or revoked token, audited.
    """
    api.audit_event(request, roles, event, token_hash=token_hash(token))
    return 404, {"error": "the token is invalid or has expired"}


def _connect_info(
    api: TokenAPI, token: str, record: TokenRecord, roles: frozenset[str]
) -> Answer:
    """
    What a token grants, with its VNC password for the proxy role only
    (the proxy needs it to authenticate to the VNC server).
    """
    info = record.connect_info()
    if PROXY in roles:
        try:
            password = reveal_password(record.options, api.secrets)
        except SecretError as e:
            api.log.error(
                "token {token_ref}: {why}", token_ref=token_ref(token), why=str(e)
            )
            return 500, {"error": "the token's VNC password cannot be decrypted"}
        if password is not None:
            info[PLAIN] = password
    return 200, info
