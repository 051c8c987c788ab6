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


@dataclass(frozen=True, slots=True)
class LoadSample:
    target: str
    scenario: str
    connections: int
    rep: int
    result: wrk.WrkResult
    cpu_us_per_request: float
    hits: int  # the fakes' request counter, after minus before
    # Cores' worth of CPU that processes this run did not start used meanwhile:
    # on a shared machine, the sign that a figure is low because of a neighbour.
    foreign_cores: float = 0.0

    @property
    def forwarded_ok(self) -> bool:
        # Completed requests were all forwarded; requests cut off when wrk stopped may have been.
        return self.result.requests <= self.hits <= self.result.sent


@dataclass(frozen=True, slots=True)
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


def measure_wrk(target: Target, scenario: str, script: str, *, connections: int, seconds: float,
                rep: int, fake_urls: list[str], pin: bool, procs: ProcessSet) -> LoadSample:
    path, _ = wrk.SCENARIOS[scenario]
    wait_idle(procs)
    before_hits = control.wait_quiet(fake_urls)
    before_cpu = cpu_seconds(target.proc.pid)
    interference = Interference(procs)
    result = wrk.run(target.base_url + path, script, connections=connections, seconds=seconds,
                     cpu=LOAD_CORE if pin else None)
    foreign = interference.cores()
    hits = control.wait_quiet(fake_urls) - before_hits
    # Read after the upstream went quiet: requests the proxy was still working
    # through when wrk stopped are this run's cost, not the next run's.
    cpu = cpu_seconds(target.proc.pid) - before_cpu
    target.proc.check_alive()
    per_request = cpu / result.requests * 1e6 if result.requests else float("nan")
    return LoadSample(target.name, scenario, connections, rep, result, per_request, hits, foreign)


def _run_loop(coro):
    try:
        import uvloop  # the client's own overhead lands in every target's TTFB alike; keep it small
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def measure_streams(target: Target, *, connections: int, streams: int, rep: int,
                    fake_urls: list[str], procs: ProcessSet) -> StreamSample:
    wait_idle(procs)
    before_hits = control.wait_quiet(fake_urls)
    run = _run_loop(streaming.run_streams(
        target.base_url + "/v1/chat/completions", wrk.STREAM_BODY, target.headers(),
        streams=streams, concurrency=connections, deadline_s=60 + streams * 0.5))
    hits = control.wait_quiet(fake_urls) - before_hits
    target.proc.check_alive()
    return StreamSample(
        target.name, connections, rep, run.started, run.completed, run.failed,
        percentile(run.ttfb_ms, 50), percentile(run.ttfb_ms, 99),
        percentile(run.total_ms, 50), percentile(run.total_ms, 99), hits, tuple(run.errors))
