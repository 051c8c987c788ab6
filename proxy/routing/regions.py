"""Per-region views: health for the admin API, and the region moves /metrics counts."""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config.snapshot import Snapshot

HEALTHY_STATES = ("healthy",)


def region_health(snapshot: Snapshot, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`rows` is the health monitor's summary. An untagged upstream counts in every region,
    since it serves every one."""
    local = snapshot.server.region
    names = sorted({row["region"] for row in rows if row["region"]} | ({local} if local else set()))
    untagged = [row for row in rows if not row["region"]]
    regions = []
    for name in names:
        members = [row for row in rows if row["region"] == name] + untagged
        healthy = [row["name"] for row in members if row["state"] in HEALTHY_STATES]
        regions.append({"region": name, "local": name == local, "upstreams": [row["name"] for row in members],
                        "healthy": healthy, "healthy_count": len(healthy), "total": len(members)})
    return {"local": local, "regions": regions}


class RegionMoves(Collector):
    """Requests sent to another region because the local one had no healthy upstream."""

    def __init__(self, balancer) -> None:
        self._balancer = balancer

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("bluesminds_region_failover",
                                     "Requests served by another region's upstream because no upstream "
                                     "of the local region was healthy.", labels=["local", "region"])
        for (local, region), count in sorted(self._balancer.region_moves.items()):
            family.add_metric([local, region], count)
        yield family

    def describe(self) -> list[Metric]:
        return []
