"""A request keeps the snapshot it started with, even after a reload replaced it."""

from __future__ import annotations


from proxy.config import load_config
from proxy.routing.balancer import Balancer
from proxy.routing.health import HealthMonitor


def snapshot_with(tmp_path, name: str, upstreams: list[str]):
    path = tmp_path / f"{name}.yaml"
    entries = "".join(f"  - name: {u}\n    url: http://127.0.0.1:{9000 + i}\n    models: '*'\n"
                      for i, u in enumerate(upstreams))
    path.write_text("models:\n  m1: {}\nupstreams:\n" + entries)
    return load_config(str(path))


def test_request_on_old_snapshot_still_finds_its_upstream(tmp_path) -> None:
    old = snapshot_with(tmp_path, "old", ["a"])
    new = snapshot_with(tmp_path, "new", ["b"])
    health = HealthMonitor()
    balancer = Balancer(health)
    health.reconcile(old)
    # The request reads `old`; the reload lands before it picks an upstream.
    health.reconcile(new)
    balancer.reset()
    picked = balancer.pick(old, old.models["m1"])
    assert picked is not None and picked.name == "a"


def test_request_on_new_snapshot_uses_new_upstreams(tmp_path) -> None:
    old = snapshot_with(tmp_path, "old", ["a"])
    new = snapshot_with(tmp_path, "new", ["b"])
    health = HealthMonitor()
    balancer = Balancer(health)
    health.reconcile(old)
    health.reconcile(new)
    assert balancer.pick(new, new.models["m1"]).name == "b"
