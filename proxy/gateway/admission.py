"""Step 2: who is calling, which model, may they use it, and the limiter's admit.

The scope a family needs is part of its description; the key's scopes come
from the authenticator. Everything that can refuse a request before an
upstream is asked happens here, in this order.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import AUTHENTICATOR, LIMITER, METRICS
from ..auth.client_address import client_address
from ..errors import GatewayError, ModelNotFound, PermissionDenied
from .call import Call


async def admit(request: web.Request, call: Call) -> None:
    app = call.app
    snapshot = call.snapshot
    family = call.family
    parsed = call.parsed
    principal = call.principal
    if principal is None:  # a replay arrives with its owner's principal already set
        principal = call.principal = await app[AUTHENTICATOR].authenticate(
            family.credentials(request), snapshot, client=client_address(request))
    require_scope(principal, family.scope)
    model = snapshot.resolve_model(parsed.model)
    if model is None:
        raise ModelNotFound(parsed.model)
    call.model = model
    plan = snapshot.plans.get(principal.plan)
    if plan is None:
        raise PermissionDenied(f"Your plan '{principal.plan}' is not offered any more; ask the operator "
                               "to move your account to another plan.", code="plan_not_found")
    call.plan = plan
    if not principal.may_use_model(model.name, plan.models):
        raise PermissionDenied(f"This API key may not use the model `{model.name}`.", param="model",
                               code="model_not_allowed")
    prompt_estimate = call.prompt_estimate = family.estimate_prompt(parsed.body)
    completion_estimate = (parsed.max_tokens or plan.default_max_tokens) if family.completes else 0
    cost_estimate = model.pricing.cost(prompt_estimate, completion_estimate) if model.pricing else 0.0
    limiter = app[LIMITER]
    try:
        hold = limiter.admit(principal, plan, estimated_tokens=prompt_estimate + completion_estimate,
                             estimated_cost=cost_estimate)
        # The in-process limiter answers at once; a shared one (Redis) is a round trip.
        # (hasattr, not inspect.isawaitable: that is an ABC check on every request.)
        call.reservation = await hold if hasattr(hold, "__await__") else hold
    except GatewayError as exc:
        app[METRICS].limiter_rejected(exc.type)
        raise
    call.rl_headers = limiter.headers(call.reservation)


def require_scope(principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise PermissionDenied(f"This API key lacks the '{scope}' scope; create a key that has it.",
                               code="insufficient_scope")
