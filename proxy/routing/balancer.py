"""Pick an upstream: lowest priority number first, smooth weighted round-robin inside it.

Smooth WRR (nginx's): every pick adds each peer's weight to its running score,
takes the highest, and subtracts the total from the winner. Over one cycle
(sum of weights) each peer is picked exactly `weight` times, interleaved
rather than in bursts. Cursor state is kept per set of available peers, so an
ejection or a retry's exclusions start a fresh, still exact, cycle.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable

from ..config.snapshot import ModelConfig, Snapshot, UpstreamConfig
from .health import HealthMonitor

Tier = tuple[UpstreamConfig, ...]


class _Smooth:
    __slots__ = ("peers", "weights", "scores", "total")

    def __init__(self, peers: Tier) -> None:
        self.peers = peers
        self.weights = [p.weight for p in peers]
        self.scores = [0] * len(peers)
        self.total = sum(self.weights)

    def next(self) -> UpstreamConfig:
        scores = self.scores
        best = 0
        for i, w in enumerate(self.weights):
            scores[i] += w
            if scores[i] > scores[best]:
                best = i
        scores[best] -= self.total
        return self.peers[best]


class Balancer:
    def __init__(self, health: HealthMonitor) -> None:
        self._health = health
        self._tiers: dict[tuple[int, str], tuple[Tier, ...]] = {}
        self._snapshot_id = 0
        self._cursors: dict[tuple[str, ...], _Smooth] = {}

    def reset(self) -> None:
        """Forget cached tiers and cursors (after a reload)."""
        self._tiers.clear()
        self._cursors.clear()

    def tiers(self, snapshot: Snapshot, model: ModelConfig) -> tuple[Tier, ...]:
        """Upstreams allowed to serve `model`, grouped by priority, best first."""
        key = (id(snapshot), model.name)
        tiers = self._tiers.get(key)
        if tiers is None:
            if self._snapshot_id != id(snapshot):
                # A new snapshot: cached tiers of the old one are stale.
                self._tiers.clear()
                self._snapshot_id = id(snapshot)
            tiers = _build_tiers(snapshot, model)
            self._tiers[key] = tiers
        return tiers

    def pick(self, snapshot: Snapshot, model: ModelConfig, exclude: Iterable[str] = ()) -> UpstreamConfig | None:
        now = self._health.now()
        excluded = set(exclude)
        for tier in self.tiers(snapshot, model):
            available = tuple(u for u in tier
                              if u.name not in excluded and u.admits_new_requests
                              and self._health.available(u, now))
            if available:
                if len(available) == 1:
                    return available[0]
                key = tuple(u.name for u in available)
                cursor = self._cursors.get(key)
                if cursor is None or cursor.peers != available:
                    cursor = self._cursors[key] = _Smooth(available)
                return cursor.next()
        return None

    def all_saturated(self, snapshot: Snapshot, model: ModelConfig) -> bool:
        """True when live upstreams exist but every one is at its max_concurrent."""
        now = self._health.now()
        live = [u for tier in self.tiers(snapshot, model) for u in tier
                if u.admits_new_requests and self._health.alive(u.name, now)]
        return bool(live) and all(u.max_concurrent is not None for u in live)


def _build_tiers(snapshot: Snapshot, model: ModelConfig) -> tuple[Tier, ...]:
    allowed_names: set[str] | None = None
    allowed_regions: set[str] | None = None
    for rule in snapshot.routing:
        if fnmatchcase(model.name, rule.model):
            allowed_names = set(rule.upstreams) if rule.upstreams else None
            allowed_regions = set(rule.regions) if rule.regions else None
            break
    by_priority: dict[int, list[UpstreamConfig]] = {}
    for upstream in snapshot.upstreams:
        if not upstream.serves(model.name):
            continue
        if allowed_names is not None and upstream.name not in allowed_names:
            continue
        if allowed_regions is not None and upstream.region not in allowed_regions:
            continue
        by_priority.setdefault(upstream.priority, []).append(upstream)
    return tuple(tuple(by_priority[p]) for p in sorted(by_priority))
