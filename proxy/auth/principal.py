"""Who is calling /v1: the result of authenticating a `bm-…` key."""

from __future__ import annotations

from dataclasses import dataclass, field

# Scopes a key can hold; each /v1 route needs one.
SCOPES = ("chat", "completions", "embeddings", "models", "responses", "messages", "moderations", "images",
          "audio", "rerank")


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Per-key limits; each can only tighten the plan's (None = the plan's)."""

    rpm: int | None = None
    tpm: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    requests_per_month: int | None = None
    tokens_per_month: int | None = None
    monthly_budget_usd: float | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    key_id: int | None  # None for a session or the admin key
    plan: str  # name of a plan in the config snapshot
    scopes: frozenset[str] = frozenset(SCOPES)
    models: tuple[str, ...] | None = None  # the key's allow-list; None = whatever the plan allows
    limits: KeyLimits = field(default_factory=KeyLimits)
    is_admin: bool = False
    email: str | None = None
    capture: bool = False  # the key's owner opted in to capturing its bodies (proxy/capture/)
    tags: frozenset[str] = frozenset()  # the key's tags, for routing rules
    cache: bool | None = None  # the key's response-cache setting; None follows the plan (proxy/cache/policy.py)

    def may_use_model(self, model: str, plan_models: tuple[str, ...]) -> bool:
        if "*" not in plan_models and model not in plan_models:
            return False
        return self.models is None or "*" in self.models or model in self.models
