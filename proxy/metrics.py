"""Prometheus metrics, one registry per app, served at GET /metrics.

Who may scrape is `server.metrics.access`: `admin` (the default: the admin
key or an admin's session, checked by the app's admin gate), `open`, or
`listener` (only on a separate address, `server.metrics.listen`).

The hot path pays for a dict lookup and a few integer additions; the
Prometheus families are built only when scraped, and so are values that
already live elsewhere (the usage queue).

Series:
    bluesminds_requests_total{route,status,model,upstream}      counter
    bluesminds_request_duration_seconds{route,model}            histogram
    bluesminds_tokens_total{model,kind="prompt"|"completion"}   counter
    bluesminds_limiter_rejections_total{kind}                   counter
    bluesminds_upstream_health{upstream,state}                  1 for the current state, else 0
    bluesminds_upstream_up{upstream}                            1 when healthy
    bluesminds_usage_queue_depth                                rows waiting to be written
    bluesminds_usage_rows_written_total, _batches_total, _failed_batches_total, _rows_rejected_total
    bluesminds_usage_rows_spilled_total, bluesminds_usage_rows_unsaved   rows in the spill file; rows
                                                                kept only in memory (disk full)
    bluesminds_store_writable                                   0 while the database refuses writes
    bluesminds_limiter_backend_up                               shared limiter (Redis): 1 up, 0 down
                                                                or restoring (only with limits.backend redis)
    bluesminds_limiter_fail_closed_total, bluesminds_limiter_fallback_total   requests refused because
                                                                quotas could not be checked; admitted on
                                                                this worker's rpm/tpm share meanwhile
"""

from __future__ import annotations

import errno
import logging
from bisect import bisect_left
from typing import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .appkeys import CONFIG, HEALTH, METRICS, METRICS_LISTENER, USAGE
from .errors import NotFound, PortInUse

log = logging.getLogger("bluesminds")

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
        self._traffic = _Traffic()
        self.registry.register(self._traffic)
        self._health = _UpstreamHealth()
        self.registry.register(self._health)

    # -- hot path ----------------------------------------------------------------
    # Plain dict and list arithmetic: the event loop is the only writer, so the
    # locks prometheus_client's own counters take on every increment buy nothing.

    def observe_request(self, route: str, status: int, model: str, upstream: str | None,
                        latency_s: float) -> None:
        t = self._traffic
        key = (route, status, model, upstream or "")
        count = t.requests.get(key)
        if count is None:
            if len(t.requests) >= MAX_LABEL_SETS:
                model = OTHER
                key = (route, status, model, upstream or "")
            count = t.requests.get(key, 0)
        t.requests[key] = count + 1
        hist_key = (route, model)
        hist = t.latency.get(hist_key)
        if hist is None:
            hist = t.latency[hist_key] = [0.0] + [0] * (len(LATENCY_BUCKETS) + 1)
        hist[0] += latency_s
        hist[1 + bisect_left(LATENCY_BUCKETS, latency_s)] += 1

    def observe_tokens(self, model: str, prompt: int, completion: int) -> None:
        tokens = self._traffic.tokens
        counts = tokens.get(model)
        if counts is None:
            if len(tokens) >= MAX_LABEL_SETS:
                model = OTHER
            counts = tokens.setdefault(model, [0, 0])
        counts[0] += prompt
        counts[1] += completion

    def limiter_rejected(self, kind: str) -> None:
        rejections = self._traffic.rejections
        rejections[kind] = rejections.get(kind, 0) + 1

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

    def watch_limiter(self, limiter) -> None:
        """Export a shared limiter's state and its degraded-mode counters, read at scrape time."""
        self.registry.register(_LimiterCollector(limiter))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Traffic(Collector):
    """Request, latency, token and rejection counts, turned into Prometheus
    families only when scraped."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int, str, str], int] = {}
        # (route, model) -> [sum, count per bucket..., count above the last bound]
        self.latency: dict[tuple[str, str], list] = {}
        self.tokens: dict[str, list[int]] = {}  # model -> [prompt, completion]
        self.rejections: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("bluesminds_requests", "Requests answered on /v1.",
                                       labels=["route", "status", "model", "upstream"])
        for (route, status, model, upstream), count in list(self.requests.items()):
            requests.add_metric([route, str(status), model, upstream], count)
        yield requests
        latency = HistogramMetricFamily("bluesminds_request_duration_seconds",
                                        "Time from request to the last byte of the answer.",
                                        labels=["route", "model"])
        bounds = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
        for (route, model), hist in list(self.latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, hist[1:]):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([route, model], buckets, hist[0])
        yield latency
        tokens = CounterMetricFamily("bluesminds_tokens", "Tokens accounted, by model and kind.",
                                     labels=["model", "kind"])
        for model, (prompt, completion) in list(self.tokens.items()):
            tokens.add_metric([model, "prompt"], prompt)
            tokens.add_metric([model, "completion"], completion)
        yield tokens
        rejections = CounterMetricFamily("bluesminds_limiter_rejections",
                                         "Requests refused by the limiter, by kind of limit.", labels=["kind"])
        for kind, count in list(self.rejections.items()):
            rejections.add_metric([kind], count)
        yield rejections

    def describe(self) -> list[Metric]:
        return []


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
        unsaved = GaugeMetricFamily("bluesminds_usage_rows_unsaved",
                                    "Usage rows neither the database nor the spill file could take.")
        unsaved.add_metric([], getattr(recorder, "unsaved_rows", 0) if recorder else 0)
        yield unsaved
        writable = GaugeMetricFamily("bluesminds_store_writable",
                                     "1 while the database accepts writes, 0 while it refuses them.")
        writable.add_metric([], 0 if recorder and getattr(recorder, "store_problem", None) else 1)
        yield writable
        for name, help_text, attr in (
            ("bluesminds_usage_rows_written", "Usage rows written to the database.", "written"),
            ("bluesminds_usage_batches", "Usage batches committed.", "batches"),
            ("bluesminds_usage_failed_batches", "Usage batch writes that failed and were retried.",
             "failed_batches"),
            ("bluesminds_usage_rows_rejected", "Usage rows the database refused, kept in the "
             "rejected file.", "rejected"),
            ("bluesminds_usage_rows_spilled", "Usage rows saved to the spill file.", "spilled"),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], getattr(recorder, attr, 0) if recorder else 0)
            yield family

    def describe(self) -> list[Metric]:
        return []






class _LimiterCollector(Collector):
    def __init__(self, limiter) -> None:
        self._limiter = limiter

    def collect(self) -> Iterator[Metric]:
        limiter = self._limiter
        up = GaugeMetricFamily("bluesminds_limiter_backend_up",
                               "1 while the shared limiter (Redis) is reachable and seeded.")
        up.add_metric([], 1 if limiter.state == "up" else 0)
        yield up
        for name, help_text, attr in (
            ("bluesminds_limiter_fail_closed", "Requests refused because their quotas could not "
             "be checked (shared limiter down).", "fail_closed"),
            ("bluesminds_limiter_fallback", "Requests admitted on this worker's share of rpm/tpm "
             "while the shared limiter was down.", "fallbacks"),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], getattr(limiter, attr))
            yield family

    def describe(self) -> list[Metric]:
        return []


async def metrics_handler(request: web.Request) -> web.Response:
    """/metrics on the main port. Who may read it (`server.metrics.access`) is
    checked by the app's one admin gate; in listener mode it is not served here."""
    holder = request.app.get(CONFIG)
    if holder is not None and holder.current.server.metrics.access == "listener":
        raise NotFound("Metrics are served on the separate metrics listener (server.metrics.listen), "
                       "not on this port.")
    return _scrape(request.app[METRICS])


def _scrape(metrics: Metrics) -> web.Response:
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsListener:
    """`server.metrics.access: listener`: /metrics alone, open, on its own
    address (typically loopback or a monitoring network), so the public port
    never serves it. The address is read at start; a reload does not move it."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.host = host
        self.port = port
        side = web.Application()

        async def scrape(request: web.Request) -> web.Response:
            return _scrape(metrics)

        side.router.add_get("/metrics", scrape)
        self._runner = web.AppRunner(side, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(self.host, self.port, "server.metrics.listen") from None
            raise
        self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 (port 0 picks a free one)

    async def stop(self) -> None:
        await self._runner.cleanup()


async def _listener_ctx(app: web.Application) -> AsyncIterator[None]:
    holder = app.get(CONFIG)
    settings = holder.current.server.metrics if holder is not None else None
    if settings is None or settings.access != "listener":
        yield
        return
    listener = MetricsListener(app[METRICS], settings.listen_host, settings.listen_port)
    await listener.start()
    app[METRICS_LISTENER] = listener
    log.info("metrics on http://%s:%s/metrics", listener.host, listener.port)
    yield
    await listener.stop()


def setup(app: web.Application) -> None:
    metrics = Metrics()
    app[METRICS] = metrics
    metrics.watch_usage(lambda: app.get(USAGE))
    health = app.get(HEALTH)
    if health is not None:
        health.on_change.append(metrics.set_upstream_health)
    app.router.add_get("/metrics", metrics_handler)
    app.cleanup_ctx.append(_listener_ctx)
