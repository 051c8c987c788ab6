"""The OpenAI-compatible /v1 routes: the families run by the pipeline, and the model list.

The request's path through the gateway is `proxy/gateway/` (see its
`__init__`); this module only says which families are served where.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from ..appkeys import AUTHENTICATOR, CONFIG, REQUEST_IDS
from ..auth.client_address import client_address
from ..errors import ModelNotFound
from ..gateway import followups
from ..gateway.admission import require_scope
from ..gateway.families import FAMILIES
from ..gateway.pipeline import request_id_of, routes
from ..gateway.request_ids import RequestIds

# Every OpenAI-compatible route is served under each of these. The bare root ("")
# is there because LiteLLM's own examples use base_url=http://host:port, so
# clients call /chat/completions, /models, /responses, … without /v1.
PREFIXES = ("/v1", "/api/v1", "")


def add_api_route(app: web.Application, method: str, path: str, handler) -> None:
    """Register `path` (e.g. "/models") under every API prefix: one list, so no family misses one."""
    for prefix in PREFIXES:
        app.router.add_route(method, prefix + path, handler)


async def list_models(request: web.Request) -> web.Response:
    snapshot = request.app[CONFIG].current
    request_id = request_id_of(request)
    principal = await request.app[AUTHENTICATOR].authenticate(request.headers.get("Authorization"), snapshot,
                                                            client=client_address(request))
    require_scope(principal, "models")
    plan = snapshot.plans.get(principal.plan)
    allowed = plan.models if plan else ()
    data = [{"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by}
            for m in snapshot.models.values() if principal.may_use_model(m.name, allowed)]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}),
                        content_type="application/json", headers={"x-request-id": request_id})


async def retrieve_model(request: web.Request) -> web.Response:
    snapshot = request.app[CONFIG].current
    request_id = request_id_of(request)
    principal = await request.app[AUTHENTICATOR].authenticate(request.headers.get("Authorization"), snapshot,
                                                            client=client_address(request))
    require_scope(principal, "models")
    name = request.match_info["model"]
    model = snapshot.resolve_model(name)
    plan = snapshot.plans.get(principal.plan)
    if model is None or plan is None or not principal.may_use_model(model.name, plan.models):
        raise ModelNotFound(name)
    return web.Response(body=orjson.dumps({"id": model.name, "object": "model", "created": model.created,
                                           "owned_by": model.owned_by}), content_type="application/json",
                        headers={"x-request-id": request_id})


def setup(app: web.Application) -> None:
    app[REQUEST_IDS] = RequestIds()
    app.router.add_routes(routes(FAMILIES, PREFIXES))
    app.router.add_routes(followups.routes(PREFIXES))
    add_api_route(app, "GET", "/models", list_models)
    add_api_route(app, "GET", "/models/{model}", retrieve_model)
