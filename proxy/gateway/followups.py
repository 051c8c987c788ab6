"""Follow-ups on a stored response: `GET`/`DELETE /responses/{id}`,
`POST /responses/{id}/cancel`, `GET /responses/{id}/input_items`.

They have no body and no model of their own, so they skip intake; the rest is
the pipeline's: the key and its `responses` scope, the plan, the limiter (a
request, no tokens), the upstream that holds the response (never another),
the relay, one usage row (not billed: the response was billed when made),
metrics and the access line. An id of another account answers 404 exactly as
an unknown one does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from urllib.parse import quote

from aiohttp import web

from .. import access_log
from ..appkeys import AUTHENTICATOR, CONFIG, FORWARDER, LIMITER, METRICS
from ..auth.client_address import client_address
from ..bodies import read_body
from ..errors import GatewayError, NotFound, PermissionDenied, UpstreamClientError
from .accounting import account
from .admission import require_scope
from .call import Call
from .families import RESPONSES, Family
from .pipeline import request_id_of
from .relay import complete
from .responses import holder, no_charge, owned
from .scrub import scrub_client_error


@dataclass(frozen=True, slots=True)
class Followup:
    family: Family
    method: str
    suffix: str  # after /responses/{id}


def _family(name: str, title: str, method: str) -> Family:
    return replace(RESPONSES, name=name, title=title, framing=None, method=method, usage_tokens=no_charge,
                   forward=None, remember=None, completes=False)


FOLLOWUPS = (
    Followup(_family("responses_get", "Retrieving a response", "GET"), "GET", ""),
    Followup(_family("responses_delete", "Deleting a response", "DELETE"), "DELETE", ""),
    Followup(_family("responses_cancel", "Cancelling a response", "POST"), "POST", "/cancel"),
    Followup(_family("responses_input_items", "Listing a response's input items", "GET"), "GET", "/input_items"),
)


async def handle(request: web.Request, followup: Followup) -> web.StreamResponse:
    app = request.app
    call = Call(app, app[CONFIG].current, followup.family, request_id_of(request))
    try:
        return await _run(request, call, followup)
    except GatewayError as exc:
        if isinstance(exc, UpstreamClientError):
            exc = scrub_client_error(exc, call.snapshot)
        account(call, exc.status, error_type=exc.code or exc.type)
        return followup.family.error_response(exc, {"x-request-id": call.request_id, **call.rl_headers})
    except asyncio.CancelledError:
        account(call, 499, error_type="client_disconnected")
        raise
    except Exception:
        account(call, 500, error_type="internal_error")
        raise
    finally:
        access_log.note(request, id=call.request_id, model=call.model.name if call.model else None,
                        upstream=call.upstream)


async def _run(request: web.Request, call: Call, followup: Followup) -> web.StreamResponse:
    app = request.app
    snapshot = call.snapshot
    principal = call.principal = await app[AUTHENTICATOR].authenticate(
        call.family.credentials(request), snapshot, client=client_address(request))
    require_scope(principal, call.family.scope)
    response_id = request.match_info["response_id"]
    owner = await owned(call, response_id)
    if owner is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    call.model = model = snapshot.resolve_model(owner.model)
    plan = call.plan = snapshot.plans.get(principal.plan)
    if plan is None:
        raise PermissionDenied(f"Your plan '{principal.plan}' is not offered any more; ask the operator "
                               "to move your account to another plan.", code="plan_not_found")
    if model is None or not principal.may_use_model(model.name, plan.models):
        raise PermissionDenied(f"This API key may not use the model `{owner.model}` this response was made with.",
                               code="model_not_allowed")
    limiter = app[LIMITER]
    try:
        hold = limiter.admit(principal, plan, estimated_tokens=0, estimated_cost=0.0)
        call.reservation = await hold if hasattr(hold, "__await__") else hold  # Redis: a round trip
    except GatewayError as exc:
        app[METRICS].limiter_rejected(exc.type)
        raise
    call.rl_headers = limiter.headers(call.reservation)
    upstream = holder(call, owner, response_id)
    path = b"/v1/responses/" + quote(response_id, safe="").encode() + followup.suffix.encode()
    query = request.rel_url.raw_query_string
    if query:
        path += b"?" + query.encode("ascii", "replace")
    body = await read_body(request, snapshot.server) if followup.method == "POST" else b""
    reply = await app[FORWARDER].send_to(
        upstream, model, path, body, stream=False, request_id=call.request_id, family=call.family,
        method=followup.method.encode(), holds=f"response {response_id}")
    call.upstream = reply.upstream.name
    return complete(call, reply)


def routes(prefixes: tuple[str, ...]) -> list[web.RouteDef]:
    out = []
    for followup in FOLLOWUPS:
        async def run(request: web.Request, followup: Followup = followup) -> web.StreamResponse:
            return await handle(request, followup)
        run.__name__ = run.__qualname__ = f"{followup.family.name}_endpoint"
        out.extend(web.route(followup.method, f"{prefix}/responses/{{response_id}}{followup.suffix}", run)
                   for prefix in prefixes)
    return out
