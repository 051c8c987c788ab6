"""Step 5: tokens, cost, the limiter's settlement, one usage row and metrics,
exactly once per request that reached admission. (The access line is the
middleware's: proxy/access_log.py.)

Every stamp comes from the app's clock (`app[CLOCK]`), so the rows the limiter
later seeds its quotas from sit in the same day the limiter counted them in.
"""

from __future__ import annotations

import time

from ..appkeys import CLOCK, LIMITER, METRICS, USAGE
from ..usage.record import UsageRecord
from ..usage.tokens import CHARS_PER_TOKEN
from .call import Call

# (prompt, completion, cached), and for families that report it, reasoning (part of completion).
Tokens = tuple[int, int, "int | None"] | tuple[int, int, "int | None", "int | None"]


def tokens_for_chars(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def answer_tokens(call: Call, body: bytes) -> tuple[Tokens, bool]:
    """(prompt, completion, cached) of a non-stream answer, and whether they are estimated."""
    family = call.family
    tokens = family.usage_tokens(family.usage_of(body))
    if tokens is not None:
        return tokens, False
    return (call.prompt_estimate, tokens_for_chars(family.answer_chars(body)), None), True


def account(call: Call, status: int, *, tokens: Tokens | None = None, estimated: bool = False,
            partial: bool = False, error_type: str | None = None, hit=None) -> None:
    """`hit` (proxy/cache/step.py's CacheHit): answered from the cache, billed at its flat price."""
    if call.accounted:
        return
    call.accounted = True
    app = call.app
    latency = time.perf_counter() - call.started
    parsed = call.parsed
    model_name = call.model.name if call.model else (parsed.model if parsed else "")
    prompt = completion = 0
    cached = reasoning = None
    if tokens is not None:
        prompt, completion, cached = tokens[:3]
        if len(tokens) > 3:
            reasoning = tokens[3]
        call.tokens = (prompt, completion)
    # The plan's overage price for the model when it has one, else the model's own.
    pricing = (call.plan.price.pricing_for(call.model) if call.plan else call.model.pricing) \
        if call.model else None
    cost = pricing.cost_nano(prompt, completion, cached or 0) if pricing and tokens else 0
    if hit is not None:
        cost = hit.price_nano
    if call.reservation is not None:
        limiter = app[LIMITER]
        if tokens is None:
            limiter.release(call.reservation)
        else:
            # The limiter counts nano-dollars too; it takes USD and rounds back to the same integer.
            limiter.settle(call.reservation, tokens=prompt + completion, cost=cost / 1_000_000_000)
    # Metrics labels only ever carry configured model names, never a client's string.
    metrics = app[METRICS]
    label = call.model.name if call.model else ""
    metrics.observe_request(call.route, status, label, call.upstream or "", latency)
    if tokens is not None:
        metrics.observe_tokens(label, prompt, completion)
    principal = call.principal
    if principal is not None:
        now = app[CLOCK]()
        # Redacted and bounded here, before the row enters a queue that can reach disk.
        captured = call.capture.finish(int(now)) if call.capture is not None else None
        app[USAGE].record(UsageRecord(
            ts=now, request_id=call.request_id, user_id=principal.user_id,
            key_id=principal.key_id, route=call.route,
            requested_model=parsed.model if parsed else "",
            served_model=model_name, upstream=call.upstream, status=status, error_type=error_type,
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            cached_tokens=cached, reasoning_tokens=reasoning, estimated=estimated, partial=partial, cost_nano=cost,
            latency_ms=latency * 1000.0,
            ttfb_ms=None if call.ttfb is None else call.ttfb * 1000.0,
            stream=bool(parsed and parsed.stream), replay_of=call.replay_of, capture=captured,
            cache_hit=hit is not None, cost_saved_nano=hit.saved_nano if hit is not None else 0))
