"""
The token API's routes, on one Klein app, one module per area:

    tokens       mint, list, check and use tokens
    revocations  revoke a token or an instance; the revocation feed
    sessions     the proxies' console reports; list and close consoles
    recordings   list, download, delete and replay console recordings
    document     the OpenAPI document

and what they share: C{app} (the Klein app and how it routes), C{access}
(the key and role check, L{requires}, in front of every keyed route),
C{answers} (reading a request, writing a JSON answer) and C{errors} (the
JSON 404 and 405, and the one 500 path).

Importing this package registers every route.
"""

from txvnc.consoleauth.routes import (
    document,
    errors,
    recordings,
    revocations,
    sessions,
    tokens,
)
from txvnc.consoleauth.routes.app import answer_head_with_405, app, klein_path

answer_head_with_405(app)

__all__ = [
    "app",
    "document",
    "errors",
    "klein_path",
    "recordings",
    "revocations",
    "sessions",
    "tokens",
]
