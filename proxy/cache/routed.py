"""Which routing rule the cache key must name, decided before the rules run upstream.

The cache step runs before routing, where the model is still the one the
client asked for. A rule can send two requests with the same body to
different places because of facts outside the key (the plan, the key's tags,
`metadata`, `x-bluesminds-tags`, other headers), so the key names the rule
that matched and the model it serves: requests that routing treats alike
share entries, others never do. A rule with a weighted split is not cached
at all: a hit would hand one arm's answer to a request the split meant for
the other, and the experiment would compare the cache with itself.
"""

from __future__ import annotations

from aiohttp import web

from ..gateway.call import Call
from ..gateway.routing import route_facts
from ..routing.rules import first_match

SPLIT = None  # the route tag of a request the cache must leave alone


def route_tag(request: web.Request, call: Call) -> str | None:
    """'' when no rule matches (the key is the request's own), the rule and the model it
    serves otherwise, or SPLIT."""
    snapshot = call.snapshot
    if not snapshot.routing:
        return ""  # no rules: nothing gathered, nothing matched
    rule = first_match(snapshot, route_facts(request, call), call.model.name)
    if rule is None:
        return ""
    if rule.split:
        return SPLIT
    # Names are unique (the loader checks); an unnamed rule is known by its place.
    name = rule.name or f"#{snapshot.routing.index(rule)}"
    return f"{name}>{rule.rewrite or call.model.name}"
