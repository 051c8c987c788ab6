"""examples/grafana/ and examples/prometheus/alerts.yml name only series a live gateway
exports: each metric name their PromQL uses is a sample name in /metrics (after traffic,
with the Redis limiter on so that its series exist), histogram suffixes included."""

from __future__ import annotations

import json
import pathlib
import re

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .gateway_harness import GatewayHarness, upstream_entry
from .redis_server import RedisServer, needs_redis

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# PromQL words that are not metric names: functions, aggregations, keywords, label names.
_NOT_METRICS = {"sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "clamp_min", "max",
                "min", "avg", "count", "le", "route", "model", "kind", "status", "upstream", "state", "instance",
                "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """Every metric selector in `expr`: strings, label matchers and ranges removed first."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"(?<![a-zA-Z0-9_:])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", " ", text)  # 0.95, 1e-9
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        following = text[match.end():].lstrip()
        if word in _NOT_METRICS or word.startswith("$") or following.startswith("("):
            continue
        if text[match.start() - 1:match.start()] == "$":  # a Grafana variable
            continue
        names.add(word)
    return names


def test_the_promql_parser_finds_names_behind_functions_matchers_and_ranges() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{x="}{by(b)"}[5m])))') == \
        {"a_bucket"}
    assert metric_names("sum(rate(b_total[$__rate_interval])) / clamp_min(sum(c_count), 1e-9) > 0.05") == \
        {"b_total", "c_count"}
    assert metric_names('max by (upstream, state) (d_health) == 1') == {"d_health"}


def dashboard_exprs() -> list[str]:
    dash = json.loads((EXAMPLES / "grafana" / "bluesminds-dashboard.json").read_text())
    return [t["expr"] for panel in dash["panels"] for t in panel["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((EXAMPLES / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@needs_redis
async def test_every_metric_the_dashboard_and_alerts_name_is_in_a_live_gateways_metrics(tmp_path, fake):
    redis = RedisServer()
    redis.start()
    harness = await GatewayHarness.write(
        str(tmp_path / "c"), [upstream_entry("a", fake.url)], server={"metrics": {"access": "open"}},
        limits={"backend": redis.url}, plans={"test": {"rpm": 100000, "tpm": 100000000, "models": "*"},
                                              "tiny": {"rpm": 1, "models": "*"}}).start(plan="tiny")
    try:
        async with aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(2):  # the second is over rpm 1: a limiter rejection
                async with session.post(harness.url + "/v1/chat/completions", headers=harness.headers(),
                                        data=orjson.dumps({"model": "gpt-4o-mini", "messages": [
                                            {"role": "user", "content": "hi"}]})) as resp:
                    statuses.append(resp.status)
            assert statuses == [200, 429]
            async with session.get(harness.url + "/metrics") as resp:
                assert resp.status == 200
                exposition = await resp.text()
    finally:
        await harness.stop()
        redis.close()
    exported = {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}
    dashboard, alerts = dashboard_exprs(), alert_exprs()
    assert len(dashboard) >= 11 and len(alerts) >= 10
    used = set().union(*(metric_names(e) for e in dashboard + alerts))
    assert used - exported == set(), sorted(used - exported)
    # The dashboard covers what the issue asks for: requests, latency, tokens, rejections, health, queue.
    for needed in ("bluesminds_requests_total", "bluesminds_request_duration_seconds_bucket",
                   "bluesminds_tokens_total", "bluesminds_limiter_rejections_total", "bluesminds_upstream_up",
                   "bluesminds_usage_queue_depth"):
        assert needed in set().union(*(metric_names(e) for e in dashboard))
