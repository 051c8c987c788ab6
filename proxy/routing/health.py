"""Is each upstream alive, and may it take another request?

Two signals feed one state table:
- active probes (`/health/liveliness` by default, no tokens spent) move an
  upstream between healthy and down after `rise`/`fall` consecutive results,
  HAProxy-style;
- passive ejection: `eject_after` consecutive request failures take it out of
  rotation for a cooldown that doubles with each repeat (capped), and the
  first request after the cooldown is a trial.
State is keyed by upstream name and survives a reload unless the upstream's
URL changes.

Probes go through the same `Transport` as /v1 traffic (same pool, same
parser, same bounds), so a passing probe means the path requests take works.
Only a 2xx passes: redirects are not followed (a probe that lands elsewhere
proves nothing about the upstream), and a 404 says to set `health.path`.
`reason(name)` gives a short why-not for an unavailable upstream, with no URL
in it, fit for a tenant-facing 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ..config.snapshot import HealthSettings, Snapshot, UpstreamConfig
from ..upstream.transport import Transport, TransportRequest, UpstreamConnectionError, header_lines

log = logging.getLogger("bluesminds.health")

SATURATION_REPORT_EVERY = 10.0  # seconds
# A liveness answer is a few bytes; anything past this is read no further.
PROBE_BODY_LIMIT = 64 * 1024

HEALTHY = "healthy"
DOWN = "down"
EJECTED = "ejected"


@dataclass(slots=True)
class UpstreamHealth:
    name: str
    url: str
    up: bool = True  # optimistic: a fresh gateway answers at once
    ejected_until: float = 0.0
    ejections: int = 0
    consecutive_failures: int = 0
    probe_successes: int = 0
    probe_failures: int = 0
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    latency_ewma_ms: float | None = None
    last_check: float | None = None
    last_check_ok: bool | None = None
    last_error: str | None = None
    saturated_since: float | None = field(default=None)
    # After an ejection's cooldown the upstream is on probation: exactly one
    # request tries it (half-open, as a circuit breaker does); the others keep
    # going elsewhere until that trial succeeds.
    probation: bool = False
    trial: bool = False

    def state(self, now: float) -> str:
        if not self.up:
            return DOWN
        if now < self.ejected_until:
            return EJECTED
        return HEALTHY


class HealthMonitor:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._table: dict[str, UpstreamHealth] = {}
        self._settings = HealthSettings()
        self._wake = asyncio.Event()
        self.on_change: list[Callable[[str, str], None]] = []  # (name, new state)
        self.on_saturated: list[Callable[[str], None]] = []  # (model)
        self._saturation_reported: dict[str, float] = {}

    # -- config ------------------------------------------------------------

    def reconcile(self, snapshot: Snapshot) -> None:
        """Keep state for upstreams whose URL is unchanged; start new ones healthy."""
        self._settings = snapshot.health
        fresh: dict[str, UpstreamHealth] = {}
        for upstream in snapshot.upstreams:
            old = self._table.get(upstream.name)
            if old is not None and old.url == upstream.url:
                fresh[upstream.name] = old
            else:
                fresh[upstream.name] = UpstreamHealth(upstream.name, upstream.url)
                if old is not None:
                    # Requests still running against the old URL will report in here.
                    fresh[upstream.name].in_flight = old.in_flight
        self._table = fresh

    # -- hot path ----------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def available(self, upstream: UpstreamConfig, now: float) -> bool:
        h = self._table.get(upstream.name)
        if h is None:
            # A request still on the snapshot before a reload that removed this
            # upstream: nothing is known against it, so let it finish its work.
            return True
        if not h.up or now < h.ejected_until or (h.probation and h.trial):
            return False
        return upstream.max_concurrent is None or h.in_flight < upstream.max_concurrent

    def alive(self, name: str, now: float) -> bool:
        h = self._table.get(name)
        return h is None or (h.up and now >= h.ejected_until)

    def started(self, name: str) -> bool:
        """Count a request in; True when it is the one trial of an upstream on probation."""
        h = self._table.get(name)
        if h is None:
            return False
        h.in_flight += 1
        h.requests += 1
        if h.probation and not h.trial:
            h.trial = True
            return True
        return False

    def finished(self, name: str, trial: bool = False) -> None:
        h = self._table.get(name)
        if h is not None:
            h.in_flight = max(0, h.in_flight - 1)
            if trial:
                h.trial = False

    def success(self, name: str, latency_s: float) -> None:
        h = self._table.get(name)
        if h is None:
            return
        h.consecutive_failures = 0
        if h.probation and self._clock() >= h.ejected_until:
            # A successful trial after a cooldown readmits it and forgets one ejection.
            h.probation = False
            h.ejections -= 1
            log.info("upstream readmitted after a successful trial: %s", name)
            self._notify(name, HEALTHY)
        ms = latency_s * 1000.0
        h.latency_ewma_ms = ms if h.latency_ewma_ms is None else h.latency_ewma_ms * 0.8 + ms * 0.2

    def failure(self, name: str, reason: str) -> None:
        h = self._table.get(name)
        if h is None:
            return
        h.errors += 1
        h.consecutive_failures += 1
        h.last_error = reason
        now = self._clock()
        failed_trial = h.probation and now >= h.ejected_until
        if failed_trial or (h.consecutive_failures >= self._settings.eject_after and now >= h.ejected_until):
            cooldown = min(self._settings.cooldown * (2 ** h.ejections), self._settings.max_cooldown)
            h.ejected_until = now + cooldown
            h.ejections += 1
            h.consecutive_failures = 0
            h.probation = True
            log.warning("upstream ejected: %s for %.1fs after repeated failures (%s)", name, cooldown, reason)
            self._notify(name, EJECTED)

    def saturated(self, model: str, now: float) -> None:
        """Every upstream of `model` is at its max_concurrent: the operator should add capacity.
        Reported at most once per SATURATION_REPORT_EVERY per model, however many requests see it."""
        last = self._saturation_reported.get(model)
        if last is not None and now - last < SATURATION_REPORT_EVERY:
            return
        self._saturation_reported[model] = now
        log.warning("every upstream serving %s is at its max_concurrent: add capacity", model)
        for callback in self.on_saturated:
            callback(model)

    # -- active probes -----------------------------------------------------

    async def probe_all(self, snapshot: Snapshot, transport: Transport) -> None:
        await asyncio.gather(*(self._probe(u, snapshot.health, transport)
                               for u in snapshot.upstreams if u.enabled))

    async def _probe(self, upstream: UpstreamConfig, settings: HealthSettings,
                     transport: Transport) -> None:
        h = self._table.get(upstream.name)
        if h is None:
            return
        headers = header_lines([("Authorization", f"Bearer {upstream.api_key}")]) if upstream.api_key else b""
        started = time.monotonic()
        ok, error = False, None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout
        response = None
        try:
            response = await transport.send(
                TransportRequest(b"GET", upstream.url, settings.path.encode(), headers),
                connect_timeout=settings.timeout, read_timeout=settings.timeout)
            await response.read_bounded(PROBE_BODY_LIMIT, deadline=deadline)
            ok = 200 <= response.status < 300
            error = None if ok else _probe_verdict(response.status)
        except asyncio.TimeoutError:
            error = "probe failed: timeout"
        except UpstreamConnectionError as exc:
            error = f"probe failed: {exc.reason}"
        except (OSError, ValueError) as exc:
            error = f"probe failed: {type(exc).__name__}"
        finally:
            if response is not None:
                response.release()
        h.last_check = time.time()
        h.last_check_ok = ok
        if ok:
            h.probe_failures = 0
            h.probe_successes += 1
            if not h.up and h.probe_successes >= settings.rise:
                h.up = True
                log.info("upstream healthy again: %s", upstream.name)
                self._notify(upstream.name, HEALTHY)
            if (h.probation or h.ejected_until > self._clock()) and h.probe_successes >= settings.rise:
                h.ejected_until = 0.0  # probes prove it is back; no need to wait out the cooldown
                h.probation = False
                log.info("upstream readmitted by probes: %s", upstream.name)
                self._notify(upstream.name, HEALTHY)
            latency = (time.monotonic() - started) * 1000.0
            h.latency_ewma_ms = latency if h.latency_ewma_ms is None else h.latency_ewma_ms * 0.8 + latency * 0.2
        else:
            h.probe_successes = 0
            h.probe_failures += 1
            h.last_error = error
            if h.up and h.probe_failures >= settings.fall:
                h.up = False
                log.warning("upstream down: %s (%s)", upstream.name, error)
                self._notify(upstream.name, DOWN)

    async def run(self, get_snapshot: Callable[[], Snapshot], transport: Transport) -> None:
        """Probe every upstream each interval, or at once when `check_now` is called."""
        while True:
            snapshot = get_snapshot()
            try:
                await self.probe_all(snapshot, transport)
            except Exception:
                log.exception("health probe round failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), snapshot.health.interval)
            except asyncio.TimeoutError:
                pass

    def check_now(self) -> None:
        self._wake.set()

    def _notify(self, name: str, state: str) -> None:
        for callback in self.on_change:
            callback(name, state)

    # -- reporting ---------------------------------------------------------

    def summary(self, snapshot: Snapshot) -> list[dict]:
        now = self._clock()
        out = []
        for upstream in snapshot.upstreams:
            h = self._table.get(upstream.name)
            if h is None:
                continue
            state = h.state(now)
            if not upstream.enabled:
                state = "disabled"
            elif upstream.drain:
                state = "draining"
            out.append({
                "name": upstream.name, "url": upstream.url, "state": state,
                "priority": upstream.priority, "weight": upstream.weight,
                "models": list(upstream.models), "region": upstream.region,
                "in_flight": h.in_flight, "requests": h.requests, "errors": h.errors,
                "ejections": h.ejections,
                "ejected_for_s": round(max(0.0, h.ejected_until - now), 3),
                "latency_ewma_ms": None if h.latency_ewma_ms is None else round(h.latency_ewma_ms, 3),
                "last_check": h.last_check, "last_check_ok": h.last_check_ok,
                "last_error": h.last_error, "max_concurrent": upstream.max_concurrent,
            })
        return out

    def get(self, name: str) -> UpstreamHealth | None:
        return self._table.get(name)

    def reason(self, name: str) -> str | None:
        """Why `name` takes no traffic now, in a few words and without its URL
        (e.g. "probe answered 404; set health.path"); None when it is available."""
        h = self._table.get(name)
        if h is None:
            return None
        now = self._clock()
        if not h.up:
            return h.last_error or "down"
        if now < h.ejected_until:
            why = f" after {h.last_error}" if h.last_error else ""
            return f"ejected for {h.ejected_until - now:.0f}s{why}"
        if h.probation and h.trial:
            return "on trial after an ejection"
        return None


def _probe_verdict(status: int) -> str:
    if status == 404:
        return "probe answered 404; set health.path"
    if 300 <= status < 400:
        return f"probe answered {status}; redirects are not followed, set health.path or the URL"
    return f"probe answered {status}"
