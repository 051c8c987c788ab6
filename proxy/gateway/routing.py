"""What the routing rules may see of a request, gathered only when the config has rules."""

from __future__ import annotations

from aiohttp import web

from ..routing.rules import Facts, facts_of
from .call import Call


def route_facts(request: web.Request, call: Call) -> Facts | None:
    if not call.snapshot.routing:
        return None  # no rules: nothing to match, so nothing is gathered
    principal = call.principal
    return facts_of(call.parsed.model, plan=call.plan.name if call.plan else None,
                    key_tags=getattr(principal, "tags", ()), body=call.parsed.body, headers=request.headers)
