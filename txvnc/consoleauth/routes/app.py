"""
The Klein app every route of the token API is registered on, and the few
ways its routing is set to answer as this API always has.

Twisted percent-decodes each path segment before any resource sees it, and
klein joins the decoded segments with C{/} for werkzeug. Left at that, an
encoded C{/} inside a value (C{DELETE /v1/instances/a%2Fb/tokens}) would
split it in two, and a byte that is not UTF-8 would get klein's HTML 400.
So the resource hands klein each segment encoded again (L{klein_path}) and
the default converter (L{Segment}) decodes the value a route receives.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_from_bytes, unquote

from klein import Klein
from werkzeug.routing import BaseConverter


class Segment(BaseConverter):
    """
    One non-empty path segment as the client sent it: percent-decoded, a
    byte that is not UTF-8 replaced (U+FFFD).
    """

    regex = "[^/]+"
    # werkzeug takes a regex with a "/" in it for one that may span segments.
    part_isolating = True

    def to_python(self, value: str) -> Any:
        return unquote(value, errors="replace")


def klein_path(postpath: list[bytes]) -> list[bytes]:
    """
    The path segments to show klein: each decoded segment percent-encoded
    again, so it reaches werkzeug as one ASCII segment.

    werkzeug drops a path's leading slashes (C{//v1/tokens} would route as
    C{/v1/tokens}); an empty first segment becomes C{%}, which quoting never
    produces and no route starts with, so such a path stays a 404.
    """
    segments = [quote_from_bytes(s, safe="").encode("ascii") for s in postpath]
    if len(segments) > 1 and not segments[0]:
        segments[0] = b"%"
    return segments


app = Klein()
app.url_map.converters["default"] = Segment
# One trailing slash is tolerated (docs/api.md), and never redirected.
app.url_map.strict_slashes = False
# An empty segment matches nothing, as a missing parameter.
app.url_map.merge_slashes = False


def answer_head_with_405(klein: Klein) -> None:
    """
    Take C{HEAD} out of every rule. werkzeug adds it to each C{GET} rule;
    the JSON routes have always answered C{HEAD} like any method they do
    not name (405, with C{Allow} naming the ones they do). Only the OpenAPI
    document, whose rule takes any method, answers it.
    """
    for rule in klein.url_map.iter_rules():
        if rule.methods is not None:
            rule.methods.discard("HEAD")
