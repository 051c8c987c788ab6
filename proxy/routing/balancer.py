"""Pick an upstream: lowest priority number first, smooth weighted round-robin inside it.

Smooth WRR (nginx's): every pick adds each peer's weight to its running score,
takes the highest, and subtracts the total from the winner. Over one cycle
(sum of weights) each peer is picked exactly `weight` times, interleaved
rather than in bursts. Cursor state is kept per set of available peers, so an
ejection or a retry's exclusions start a fresh, still exact, cycle.

Regions: with `server.region` set, the upstreams of that region and untagged
ones are tried first, every priority of them, and another region's only when
none of those is available; each such request is counted in `region_moves`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Iterable

from ..config.snapshot import ModelConfig, Snapshot, UpstreamConfig
from .health import HealthMonitor

if TYPE_CHECKING:
    from .rules import Step

log = logging.getLogger("bluesminds.routing")

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
        self._tiers: dict[tuple, Placement] = {}
        self._snapshot_id = 0
        self._cursors: dict[tuple[str, ...], _Smooth] = {}
        # (local region, region used) -> requests sent away from the local region; read by /metrics.
        self.region_moves: dict[tuple[str, str], int] = {}
        self._away = False  # the last pick left the local region: log the move and the return once each

    def reset(self) -> None:
        """Forget cached tiers and cursors (after a reload)."""
        self._tiers.clear()
        self._cursors.clear()

    def placement(self, snapshot: Snapshot, model: ModelConfig, step: "Step | None" = None) -> "Placement":
        """Upstreams allowed to serve `model` (for this chain step), local region first."""
        pins = _pins_of(snapshot, model) if step is None else (step.upstreams, step.regions)
        key = (model.name,) + pins
        placement = self._tiers.get(key) if self._snapshot_id == id(snapshot) else None
        if placement is None:
            if self._snapshot_id != id(snapshot):
                # A new snapshot: cached tiers of the old one are stale.
                self._tiers.clear()
                self._snapshot_id = id(snapshot)
            placement = self._tiers[key] = build_placement(snapshot, model, *pins)
        return placement

    def tiers(self, snapshot: Snapshot, model: ModelConfig, step: "Step | None" = None) -> tuple[Tier, ...]:
        """Upstreams allowed to serve `model`, grouped by priority, best first (local region before others)."""
        placement = self.placement(snapshot, model, step)
        return placement.local + placement.remote

    def pick(self, snapshot: Snapshot, model: ModelConfig, exclude: Iterable[str] = (),
             step: "Step | None" = None) -> UpstreamConfig | None:
        now = self._health.now()
        excluded = set(exclude)
        placement = self.placement(snapshot, model, step)
        chosen = self._pick_in(placement.local, excluded, now)
        if chosen is not None or not placement.remote:
            if chosen is not None and self._away:
                self._away = False
                log.warning("region %s has a healthy upstream again for %s; traffic returns to it",
                            snapshot.server.region, model.name)
            return chosen
        chosen = self._pick_in(placement.remote, excluded, now)
        if chosen is not None:
            local = snapshot.server.region or ""
            key = (local, chosen.region or "")
            self.region_moves[key] = self.region_moves.get(key, 0) + 1
            if not self._away:
                self._away = True
                log.warning("no healthy upstream in region %s for %s; using region %s (%s)",
                            local, model.name, chosen.region, chosen.name)
        return chosen

    def _pick_in(self, tiers: tuple[Tier, ...], excluded: set[str], now: float) -> UpstreamConfig | None:
        for tier in tiers:
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

    def all_saturated(self, snapshot: Snapshot, model: ModelConfig, step: "Step | None" = None) -> bool:
        """True when live upstreams exist but every one is at its max_concurrent."""
        now = self._health.now()
        live = [u for tier in self.tiers(snapshot, model, step) for u in tier
                if u.admits_new_requests and self._health.alive(u.name, now)]
        return bool(live) and all(u.max_concurrent is not None for u in live)


@dataclass(frozen=True, slots=True)
class Placement:
    local: tuple[Tier, ...]  # the local region's upstreams and untagged ones; all of them without server.region
    remote: tuple[Tier, ...]  # other regions', used only when no local one is available


def _pins_of(snapshot: Snapshot, model: ModelConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The restriction the older rules put on a model whatever the request: the first
    unconditional rule whose glob matches it."""
    for rule in snapshot.routing:
        if not rule.conditional and fnmatchcase(model.name, rule.model):
            return rule.upstreams, rule.regions
    return (), ()


def build_placement(snapshot: Snapshot, model: ModelConfig, upstreams: tuple[str, ...] = (),
                    regions: tuple[str, ...] = ()) -> Placement:
    allowed_names = set(upstreams) if upstreams else None
    allowed_regions = set(regions) if regions else None
    local_region = snapshot.server.region
    local: dict[int, list[UpstreamConfig]] = {}
    remote: dict[int, list[UpstreamConfig]] = {}
    for upstream in snapshot.upstreams:
        if not upstream.serves(model.name):
            continue
        if allowed_names is not None and upstream.name not in allowed_names:
            continue
        # An untagged upstream belongs to every region.
        if allowed_regions is not None and upstream.region is not None and upstream.region not in allowed_regions:
            continue
        is_local = local_region is None or upstream.region is None or upstream.region == local_region
        (local if is_local else remote).setdefault(upstream.priority, []).append(upstream)
    return Placement(local=tuple(tuple(local[p]) for p in sorted(local)),
                     remote=tuple(tuple(remote[p]) for p in sorted(remote)))
