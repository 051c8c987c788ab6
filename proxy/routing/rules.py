"""Which rule a request meets, and the chain of models it will be tried on.

The facts a rule can test are gathered once per request into `Facts`; the
config's rules are tried in order and the first whose conditions all hold
decides: the model served (the requested one, a rewrite, or one arm of a
weighted split), where the first model may go (upstreams, regions), and the
fallback models after it. Each fallback step takes the pins of the first
rule that matches the request with that model, which is what the older
`model` + `upstreams` rules always did for every model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Mapping

from ..config.snapshot import ModelConfig, RoutingRule, Snapshot

TAGS_HEADER = "x-bluesminds-tags"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules may look at; `headers` has lower-cased names."""

    model: str  # as the client asked for it (a name or an alias)
    plan: str | None = None
    key_tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] = None  # type: ignore[assignment]
    tags: frozenset[str] = frozenset()
    headers: Mapping[str, str] = None  # type: ignore[assignment]


def facts_of(model: str, *, plan: str | None, key_tags, body: Any, headers: Mapping[str, str]) -> Facts:
    """`headers` is any case-insensitive mapping (aiohttp's) or a dict with lower-case names."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    meta = {str(k): _text(v) for k, v in metadata.items()
            if isinstance(v, (str, int, float, bool))} if isinstance(metadata, dict) else {}
    tags = {t.strip() for t in headers.get(TAGS_HEADER, "").split(",") if t.strip()}
    return Facts(model=model, plan=plan, key_tags=frozenset(key_tags or ()), metadata=meta,
                 tags=frozenset(tags) | frozenset(meta.values()),
                 headers={k.lower(): v for k, v in headers.items()})


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_NO_FACTS = Facts(model="", metadata={}, headers={})


@dataclass(frozen=True, slots=True)
class Step:
    """One model of the chain and the upstream restriction that applies to it."""

    model: ModelConfig
    upstreams: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    rule: RoutingRule | None  # None: no rule matched, the model's own fallbacks apply
    chain: tuple[Step, ...]


def matches(rule: RoutingRule, facts: Facts, canonical: str) -> bool:
    if not (fnmatchcase(facts.model, rule.model) or fnmatchcase(canonical, rule.model)):
        return False
    if not rule.conditional:
        return True
    if rule.plans and facts.plan not in rule.plans:
        return False
    if rule.key_tags and not facts.key_tags.issuperset(rule.key_tags):
        return False
    if rule.tags and not facts.tags.issuperset(rule.tags):
        return False
    for key, value in rule.metadata:
        if facts.metadata.get(key) != value:
            return False
    for name, glob in rule.headers:
        got = facts.headers.get(name)
        if got is None or not fnmatchcase(got, glob):
            return False
    return True


def first_match(snapshot: Snapshot, facts: Facts, canonical: str) -> RoutingRule | None:
    for rule in snapshot.routing:
        if matches(rule, facts, canonical):
            return rule
    return None


def pick_arm(rule: RoutingRule, rng: random.Random) -> str:
    total = sum(arm.weight for arm in rule.split)
    point = rng.random() * total
    for arm in rule.split:
        point -= arm.weight
        if point < 0:
            return arm.model
    return rule.split[-1].model


class Router:
    """Holds the random source of the A/B split, so a test can seed it."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self._snapshot_id = 0
        self._defaults: dict[str, Route] = {}  # model -> its chain while the config has no rules

    def route(self, snapshot: Snapshot, model: ModelConfig, facts: Facts | None) -> Route:
        """`facts` may be None when there are no rules (they are not gathered then) or the
        caller has none: only rules without conditions can match."""
        if not snapshot.routing:
            # No rules: the feature costs this lookup, the chain built once per model and snapshot.
            if self._snapshot_id != id(snapshot):
                self._defaults.clear()
                self._snapshot_id = id(snapshot)
            route = self._defaults.get(model.name)
            if route is None:
                route = self._defaults[model.name] = Route(None, chain_for(snapshot, _NO_FACTS, None, model))
            return route
        if facts is None:
            facts = Facts(model=model.name, metadata={}, headers={})
        rule = first_match(snapshot, facts, model.name)
        first = model
        if rule is not None:
            if rule.rewrite:
                first = snapshot.models[rule.rewrite]
            elif rule.split:
                first = snapshot.models[pick_arm(rule, self.rng)]
        return Route(rule, chain_for(snapshot, facts, rule, first))


def chain_for(snapshot: Snapshot, facts: Facts, rule: RoutingRule | None, first: ModelConfig) -> tuple[Step, ...]:
    """`first` (already rewritten or split), then the rule's fallbacks or else the model's own."""
    fallbacks = rule.fallbacks if rule is not None and rule.fallbacks is not None else first.fallbacks
    chain = [Step(first, rule.upstreams, rule.regions) if rule is not None else Step(first)]
    seen = {first.name}
    for name in fallbacks:
        step_model = snapshot.model_lookup.get(name)
        if step_model is None or step_model.name in seen:
            continue
        seen.add(step_model.name)
        chain.append(_pinned_step(snapshot, facts, step_model))
    return tuple(chain)


def _pinned_step(snapshot: Snapshot, facts: Facts, model: ModelConfig) -> Step:
    as_requested = Facts(model=model.name, plan=facts.plan, key_tags=facts.key_tags, metadata=facts.metadata,
                         tags=facts.tags, headers=facts.headers)
    rule = first_match(snapshot, as_requested, model.name)
    if rule is None:
        return Step(model)
    return Step(model, rule.upstreams, rule.regions)
