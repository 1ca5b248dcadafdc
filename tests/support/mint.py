"""
Minting a token the way every test does it: C{POST /v1/tokens} with an API
key, the token's fields passed through untouched, and 201 required.

One request and one answer check, under three callers:

- L{mint} and L{mint_answer} in a pytest-twisted test: over treq on a fresh
  connection (none is left pooled to a twistd that a test stops next), or
  over any treq-shaped client given as C{http}, such as
  C{treq.testing.StubTreq(resource)} for the token API in memory or a client
  that trusts a test CA;
- L{mint_blocking} from a thread, on an C{http.client} connection the caller
  keeps (L{tests.support.twistd.Twistd.mint} keeps one per process).

Nothing here remembers the tokens: a caller minting from a real process
registers them for the log scans (L{tests.support.twistd.Twistd} does).
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import treq

#: Where tokens are minted, under the token API's URL.
TOKENS = "/v1/tokens"


def mint_request(key: str, fields: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """
    The headers and body of a mint with C{key} asking for C{fields}.
    """
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
    }
    return headers, json.dumps(fields).encode()


def minted(status: int, content: bytes) -> dict[str, Any]:
    """
    The answer to a mint, which must be 201 (else the test fails showing
    what came back instead).
    """
    assert status == 201, f"minting failed: {status} {content!r}"
    answer: dict[str, Any] = json.loads(content)
    return answer


async def mint_answer(
    api_url: str, key: str, *, http: Any = None, **fields: Any
) -> dict[str, Any]:
    """
    The whole answer (token, access URL, expiry, ...) to a mint of
    C{fields} at the token API at C{api_url}.

    @param http: a treq-shaped client; default: treq on a fresh connection.
    """
    headers, body = mint_request(key, fields)
    if http is None:
        response = await treq.post(
            api_url + TOKENS, data=body, headers=headers, persistent=False
        )
    else:
        response = await http.post(api_url + TOKENS, data=body, headers=headers)
    return minted(response.code, await treq.content(response))


async def mint(api_url: str, key: str, *, http: Any = None, **fields: Any) -> str:
    """
    A token for C{fields} from the token API at C{api_url} (see
    L{mint_answer}).
    """
    return str((await mint_answer(api_url, key, http=http, **fields))["token"])


def mint_blocking(
    connection: http.client.HTTPConnection, key: str, **fields: Any
) -> dict[str, Any]:
    """
    L{mint_answer} on an C{http.client} C{connection}, blocking: the caller
    retries when the API had closed an idle connection
    (C{http.client.HTTPException} or C{ConnectionError}).
    """
    headers, body = mint_request(key, fields)
    connection.request("POST", TOKENS, body, headers)
    response = connection.getresponse()
    return minted(response.status, response.read())
