"""Smooth weighted round-robin inside a priority; the next priority only when none is healthy."""

from __future__ import annotations

from collections import Counter

from proxy.config.snapshot import (AdminSettings, AuthSettings, DatabaseSettings, HealthSettings, ModelConfig,
                                   RetrySettings, RoutingRule, ServerSettings, Snapshot, UpstreamConfig)
from proxy.routing.balancer import Balancer
from proxy.routing.health import HealthMonitor

MODEL = ModelConfig(name="m", upstream_model="m")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snapshot(*upstreams: UpstreamConfig, routing=()) -> Snapshot:
    return Snapshot(server=ServerSettings(), database=DatabaseSettings(), admin=AdminSettings(),
                    auth=AuthSettings(), health=HealthSettings(eject_after=1, cooldown=10), retry=RetrySettings(),
                    upstreams=tuple(upstreams), models={"m": MODEL}, plans={}, routing=tuple(routing),
                    model_lookup={"m": MODEL}, upstream_by_name={u.name: u for u in upstreams})


def setup(*upstreams: UpstreamConfig, routing=()):
    clock = Clock()
    health = HealthMonitor(clock=clock)
    snap = snapshot(*upstreams, routing=routing)
    health.reconcile(snap)
    return Balancer(health), health, snap, clock


def up(name: str, weight: int = 1, priority: int = 1, **kw) -> UpstreamConfig:
    return UpstreamConfig(name=name, url=f"http://{name}", weight=weight, priority=priority, **kw)


def test_weights_are_exact_over_every_cycle():
    balancer, _, snap, _ = setup(up("a", 5), up("b", 1), up("c", 1))
    for _ in range(10):
        cycle = Counter(balancer.pick(snap, MODEL).name for _ in range(7))
        assert cycle == {"a": 5, "b": 1, "c": 1}


def test_smooth_order_interleaves_rather_than_bursts():
    balancer, _, snap, _ = setup(up("a", 5), up("b", 1), up("c", 1))
    order = "".join(balancer.pick(snap, MODEL).name for _ in range(7))
    assert order == "aabacaa"  # nginx's documented sequence for weights 5, 1, 1


def test_lower_priority_number_wins_while_healthy():
    balancer, _, snap, _ = setup(up("backup", priority=2), up("main", priority=1))
    assert {balancer.pick(snap, MODEL).name for _ in range(5)} == {"main"}


def test_next_priority_only_when_none_is_healthy():
    balancer, health, snap, clock = setup(up("a", priority=1), up("b", priority=1), up("backup", priority=2))
    health.failure("a", "boom")
    assert {balancer.pick(snap, MODEL).name for _ in range(4)} == {"b"}
    health.failure("b", "boom")
    assert balancer.pick(snap, MODEL).name == "backup"
    clock.now += 11  # cooldown over: the first priority is back
    assert balancer.pick(snap, MODEL).name in {"a", "b"}


def test_excluded_upstreams_are_skipped_for_a_retry():
    balancer, _, snap, _ = setup(up("a"), up("b"))
    assert balancer.pick(snap, MODEL, exclude={"a"}).name == "b"
    assert balancer.pick(snap, MODEL, exclude={"a", "b"}) is None


def test_drained_and_disabled_upstreams_take_no_new_requests():
    balancer, _, snap, _ = setup(up("a", drain=True), up("b", enabled=False), up("c"))
    assert {balancer.pick(snap, MODEL).name for _ in range(3)} == {"c"}


def test_upstream_at_max_concurrent_is_skipped_and_saturation_reported():
    balancer, health, snap, _ = setup(up("a", max_concurrent=1), up("b", max_concurrent=1))
    health.started("a")
    assert balancer.pick(snap, MODEL).name == "b"
    health.started("b")
    assert balancer.pick(snap, MODEL) is None
    assert balancer.all_saturated(snap, MODEL)
    health.finished("a")
    assert balancer.pick(snap, MODEL).name == "a"


def test_upstream_not_serving_the_model_is_never_picked():
    balancer, _, snap, _ = setup(up("a", models=("other",)), up("b"))
    assert {balancer.pick(snap, MODEL).name for _ in range(4)} == {"b"}


def test_routing_rule_pins_model_to_named_upstreams_or_regions():
    balancer, _, snap, _ = setup(up("a", region="eu"), up("b", region="us"),
                                 routing=[RoutingRule(model="m*", regions=("us",))])
    assert {balancer.pick(snap, MODEL).name for _ in range(4)} == {"b"}


def test_passive_ejection_cooldown_grows_with_repeats_and_trial_readmits():
    balancer, health, snap, clock = setup(up("a"), up("b"))
    health.failure("a", "boom")
    assert health.get("a").ejected_until == clock.now + 10
    clock.now += 10
    health.failure("a", "boom again")  # the trial failed: twice the cooldown
    assert health.get("a").ejected_until == clock.now + 20
    clock.now += 20
    health.success("a", 0.01)
    assert health.alive("a", clock.now)
    assert health.get("a").ejections == 1


def test_after_a_cooldown_only_one_trial_request_goes_to_the_ejected_upstream():
    balancer, health, snap, clock = setup(up("a"), up("b"))
    health.failure("a", "boom")
    clock.now += 10
    picks = []
    for _ in range(4):  # four requests in flight at once
        u = balancer.pick(snap, MODEL)
        if health.started(u.name):
            trial = u.name
        picks.append(u.name)
    assert picks.count("a") == 1 and trial == "a"
    health.finished("b")  # another request ending does not end the trial
    assert balancer.pick(snap, MODEL).name == "b"
    health.finished("a", trial=True)
    health.failure("a", "still down")  # the trial failed: straight back out, for longer
    assert health.get("a").ejected_until == clock.now + 20
    clock.now += 20
    u = balancer.pick(snap, MODEL)
    while u.name != "a":
        u = balancer.pick(snap, MODEL)
    assert health.started("a")
    health.finished("a", trial=True)
    health.success("a", 0.01)
    assert {balancer.pick(snap, MODEL).name for _ in range(4)} == {"a", "b"}
