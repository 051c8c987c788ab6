"""One measured run against one target: wrk or the streaming client, with the
proxy's CPU time and the upstream's hit counter read around it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench import control, streaming, wrk
from bench.procs import ProcessSet, cpu_seconds, machine_busy_seconds, own_cpu_seconds
from bench.stats import percentile
from bench.targets import LOAD_CORE, Target


@dataclass(slots=True)
class LoadSample:
    target: str
    scenario: str
    connections: int
    rep: int
    result: wrk.WrkResult
    cpu_us_per_request: float
    # Requests the target's fake upstreams received from the start of this run until the
    # start of the target's next one (see HitLedger).
    hits: int
    # Cores' worth of CPU that processes this run did not start used meanwhile:
    # on a shared machine, the sign that a figure is low because of a neighbour.
    foreign_cores: float = 0.0

    @property
    def forwarded_ok(self) -> bool:
        # Completed requests were all forwarded; requests cut off when wrk stopped may have been.
        return self.result.requests <= self.hits <= self.result.sent


@dataclass(slots=True)
class StreamSample:
    target: str
    connections: int
    rep: int
    streams: int
    completed: int
    failed: int
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    hits: int
    errors: tuple[str, ...]

    @property
    def forwarded_ok(self) -> bool:
        return self.hits == self.streams and self.failed == 0


class Interference:
    """Machine-wide CPU time minus what our own processes used, over a span."""

    def __init__(self, procs: ProcessSet) -> None:
        self._procs = procs
        self._start = (time.monotonic(), machine_busy_seconds(), own_cpu_seconds(procs))

    def cores(self) -> float:
        wall, busy, own = time.monotonic(), machine_busy_seconds(), own_cpu_seconds(self._procs)
        elapsed = wall - self._start[0]
        foreign = (busy - self._start[1]) - (own - self._start[2])
        return max(0.0, foreign / elapsed) if elapsed > 0 else 0.0


def wait_idle(procs: ProcessSet, *, window: float = 0.1, busy_below: float = 0.05, timeout: float = 10.0) -> None:
    """Until the processes we started are idle: a proxy that fell far behind (LiteLLM at 64
    clients) works through its backlog after wrk stops, on the core the next target uses."""
    deadline = time.monotonic() + timeout
    last = sum(cpu_seconds(p.pid) for p in procs.started)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = sum(cpu_seconds(p.pid) for p in procs.started)
        if now - last < busy_below * window:
            return
        last = now


class HitLedger:
    """Every upstream hit attributed to the measurement that caused it.

    Each target forwards to fake upstreams of its own, so a hit can only come
    from that target; a measurement's count runs until the same target's next
    measurement starts (or the end of the run). A proxy that forwards a
    request late, after the counters looked settled, is still counted right.
    """

    def __init__(self) -> None:
        self._open: dict[str, tuple[LoadSample | StreamSample, int]] = {}

    def start(self, target: Target) -> int:
        count = control.wait_quiet(target.upstreams)
        self._close(target.name, count)
        return count

    def track(self, target: Target, sample: LoadSample | StreamSample, start: int) -> None:
        self._open[target.name] = (sample, start)

    def finish(self, targets: list[Target]) -> None:
        for target in targets:
            if target.name in self._open:
                self._close(target.name, control.wait_quiet(target.upstreams))

    def _close(self, name: str, count: int) -> None:
        if name in self._open:
            sample, start = self._open.pop(name)
            sample.hits = count - start


def measure_wrk(target: Target, scenario: str, script: str, *, connections: int, seconds: float,
                rep: int, pin: bool, procs: ProcessSet, ledger: HitLedger) -> LoadSample:
    path, _ = wrk.SCENARIOS[scenario]
    wait_idle(procs)
    before_hits = ledger.start(target)
    before_cpu = cpu_seconds(target.proc.pid)
    interference = Interference(procs)
    result = wrk.run(target.base_url + path, script, connections=connections, seconds=seconds,
                     cpu=LOAD_CORE if pin else None)
    foreign = interference.cores()
    hits = control.wait_quiet(target.upstreams) - before_hits  # provisional, until the ledger closes it
    # Read after the upstream went quiet: requests the proxy was still working
    # through when wrk stopped are this run's cost, not the next run's.
    cpu = cpu_seconds(target.proc.pid) - before_cpu
    target.proc.check_alive()
    per_request = cpu / result.requests * 1e6 if result.requests else float("nan")
    sample = LoadSample(target.name, scenario, connections, rep, result, per_request, hits, foreign)
    ledger.track(target, sample, before_hits)
    return sample


def _run_loop(coro):
    try:
        import uvloop  # the client's own overhead lands in every target's TTFB alike; keep it small
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def measure_streams(target: Target, *, connections: int, streams: int, rep: int, procs: ProcessSet,
                    ledger: HitLedger, api: str = "chat") -> StreamSample:
    wait_idle(procs)
    before_hits = ledger.start(target)
    path, body = wrk.STREAMS[api]
    run = _run_loop(streaming.run_streams(
        target.base_url + path, body, target.headers(),
        streams=streams, concurrency=connections, deadline_s=60 + streams * 0.5))
    hits = control.wait_quiet(target.upstreams) - before_hits
    target.proc.check_alive()
    sample = StreamSample(
        target.name, connections, rep, run.started, run.completed, run.failed,
        percentile(run.ttfb_ms, 50), percentile(run.ttfb_ms, 99),
        percentile(run.total_ms, 50), percentile(run.total_ms, 99), hits, tuple(run.errors))
    ledger.track(target, sample, before_hits)
    return sample
