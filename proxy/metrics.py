"""Prometheus metrics, one registry per app, served at GET /metrics.

The hot path pays for a dict lookup and one or two increments: label children
are bound once per label combination and cached, because `.labels()` costs
several times more than the increment itself. Values that already live
elsewhere (the usage queue) are read only when Prometheus scrapes.

Series:
    bluesminds_requests_total{route,status,model,upstream}      counter
    bluesminds_request_duration_seconds{route,model}            histogram
    bluesminds_tokens_total{model,kind="prompt"|"completion"}   counter
    bluesminds_limiter_rejections_total{kind}                   counter
    bluesminds_upstream_health{upstream,state}                  1 for the current state, else 0
    bluesminds_upstream_up{upstream}                            1 when healthy
    bluesminds_usage_queue_depth                                rows waiting to be written
    bluesminds_usage_rows_written_total, _batches_total, _failed_batches_total, _rows_rejected_total
"""

from __future__ import annotations

from typing import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .appkeys import HEALTH
from .usage.recorder import USAGE

# Seconds; LLM calls run from tens of milliseconds (embeddings) to minutes (long streams).
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
HEALTHY_STATES = frozenset({"healthy", "up"})
# A model name can come from the client (a request for a model that does not
# exist), so the label sets are capped: past the cap, new names count as OTHER
# instead of growing memory and the scrape without bound.
MAX_LABEL_SETS = 5_000
OTHER = "_other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "bluesminds_requests", "Requests answered on /v1.",
            ["route", "status", "model", "upstream"], registry=self.registry)
        self._latency = Histogram(
            "bluesminds_request_duration_seconds", "Time from request to the last byte of the answer.",
            ["route", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._tokens = Counter(
            "bluesminds_tokens", "Tokens accounted, by model and kind.",
            ["model", "kind"], registry=self.registry)
        self._rejections = Counter(
            "bluesminds_limiter_rejections", "Requests refused by the limiter, by kind of limit.",
            ["kind"], registry=self.registry)
        self._health = _UpstreamHealth()
        self.registry.register(self._health)
        self._request_children: dict[tuple, tuple] = {}
        self._token_children: dict[str, tuple] = {}
        self._rejection_children: dict[str, object] = {}

    # -- hot path ----------------------------------------------------------------

    def observe_request(self, route: str, status: int, model: str, upstream: str | None,
                        latency_s: float) -> None:
        key = (route, status, model, upstream)
        children = self._request_children.get(key)
        if children is None:
            if len(self._request_children) >= MAX_LABEL_SETS:
                model = OTHER
                key = (route, status, model, upstream)
                children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self._requests.labels(route, str(status), model, upstream or ""),
                self._latency.labels(route, model),
            )
        children[0].inc()
        children[1].observe(latency_s)

    def observe_tokens(self, model: str, prompt: int, completion: int) -> None:
        children = self._token_children.get(model)
        if children is None and len(self._token_children) >= MAX_LABEL_SETS:
            model = OTHER
            children = self._token_children.get(model)
        if children is None:
            children = self._token_children[model] = (
                self._tokens.labels(model, "prompt"), self._tokens.labels(model, "completion"))
        if prompt:
            children[0].inc(prompt)
        if completion:
            children[1].inc(completion)

    def observe_usage(self, rec) -> None:
        """Both of the above from one UsageRecord."""
        self.observe_request(rec.route, rec.status, rec.served_model, rec.upstream,
                             rec.latency_ms / 1000.0)
        self.observe_tokens(rec.served_model, rec.prompt_tokens, rec.completion_tokens)

    def limiter_rejected(self, kind: str) -> None:
        child = self._rejection_children.get(kind)
        if child is None:
            child = self._rejection_children[kind] = self._rejections.labels(kind)
        child.inc()

    # -- state ---------------------------------------------------------------------

    def set_upstream_health(self, name: str, state: str | bool) -> None:
        """`state` is a word ("healthy", "unhealthy", "ejected", "draining"…) or a bool."""
        if isinstance(state, bool):
            state = "healthy" if state else "unhealthy"
        self._health.set(name, state)

    def forget_upstream(self, name: str) -> None:
        """Stop exporting an upstream that left the config."""
        self._health.forget(name)

    def watch_usage(self, source) -> None:
        """Export queue depth and write counters of a usage recorder, read at scrape time."""
        self.registry.register(_UsageCollector(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _UpstreamHealth(Collector):
    """Every state an upstream has been seen in stays a series (at 0), so a
    dashboard sees the flip rather than a series vanishing."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}
        self._seen: dict[str, set[str]] = {}

    def set(self, name: str, state: str) -> None:
        self._states[name] = state
        self._seen.setdefault(name, set()).add(state)

    def forget(self, name: str) -> None:
        self._states.pop(name, None)
        self._seen.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        health = GaugeMetricFamily("bluesminds_upstream_health",
                                   "1 for the state each upstream is in, 0 for states it was in before.",
                                   labels=["upstream", "state"])
        up = GaugeMetricFamily("bluesminds_upstream_up", "1 when the upstream is healthy.",
                               labels=["upstream"])
        for name, state in sorted(self._states.items()):
            for each in sorted(self._seen[name]):
                health.add_metric([name, each], 1.0 if each == state else 0.0)
            up.add_metric([name], 1.0 if state in HEALTHY_STATES else 0.0)
        yield health
        yield up

    def describe(self) -> list[Metric]:
        return []


class _UsageCollector(Collector):
    def __init__(self, source) -> None:
        # `source()` returns the recorder, or None before it has started.
        self._source = source

    def collect(self) -> Iterator[Metric]:
        recorder = self._source()
        depth = GaugeMetricFamily("bluesminds_usage_queue_depth",
                                  "Usage rows waiting to be written to the database.")
        depth.add_metric([], recorder.queue_depth if recorder else 0)
        yield depth
        for name, help_text, attr in (
            ("bluesminds_usage_rows_written", "Usage rows written to the database.", "written"),
            ("bluesminds_usage_batches", "Usage batches committed.", "batches"),
            ("bluesminds_usage_failed_batches", "Usage batch writes that failed and were retried.",
             "failed_batches"),
            ("bluesminds_usage_rows_rejected", "Usage rows the database refused, kept in the "
             "rejected file.", "rejected"),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], getattr(recorder, attr) if recorder else 0)
            yield family

    def describe(self) -> list[Metric]:
        return []


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    metrics = Metrics()
    app[METRICS] = metrics
    metrics.watch_usage(lambda: app.get(USAGE))
    health = app.get(HEALTH)
    if health is not None:
        health.on_change.append(metrics.set_upstream_health)
    app.router.add_get("/metrics", metrics_handler)
