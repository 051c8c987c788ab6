"""The results as one Markdown document: the tables, the targets met or not,
the forwarding proof, the scale figures and the micro-benchmarks' output."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from bench.load import LoadSample, StreamSample
from bench.stats import median

MB = 2**20


@dataclass
class Results:
    settings: dict
    samples: list[LoadSample] = field(default_factory=list)
    streams: list[StreamSample] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    startup: dict[str, tuple[float | None, str]] = field(default_factory=dict)
    rss_idle: dict[str, int] = field(default_factory=dict)
    rss_loaded: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why it did not run
    scale: dict[str, dict | str] = field(default_factory=dict)
    micro: dict[str, str] = field(default_factory=dict)
    profile: str = ""
    elapsed_s: float = 0.0
    retried: int = 0  # loads measured again because a neighbour was busy
    environment: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LoadRow:
    target: str
    scenario: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    non_2xx: int
    socket_errors: int
    requests: int
    hits: int
    forwarded_ok: bool
    reps: int
    foreign_cores: float


def load_rows(samples: Iterable[LoadSample]) -> dict[tuple[str, str, int], LoadRow]:
    grouped: dict[tuple[str, str, int], list[LoadSample]] = defaultdict(list)
    for s in samples:
        grouped[(s.target, s.scenario, s.connections)].append(s)
    return {
        key: LoadRow(
            target=key[0], scenario=key[1], connections=key[2],
            rps=median([s.result.rps for s in group]),
            p50_ms=median([s.result.p50_ms for s in group]),
            p99_ms=median([s.result.p99_ms for s in group]),
            cpu_us=median([s.cpu_us_per_request for s in group]),
            non_2xx=sum(s.result.non_2xx for s in group),
            socket_errors=sum(s.result.socket_errors for s in group),
            requests=sum(s.result.requests for s in group),
            hits=sum(s.hits for s in group),
            forwarded_ok=all(s.forwarded_ok for s in group),
            reps=len(group),
            foreign_cores=median([s.foreign_cores for s in group]),
        )
        for key, group in grouped.items()
    }


@dataclass(frozen=True, slots=True)
class StreamRow:
    target: str
    connections: int
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    streams: int
    failed: int
    hits: int
    forwarded_ok: bool


def stream_rows(samples: Iterable[StreamSample]) -> dict[tuple[str, int], StreamRow]:
    grouped: dict[tuple[str, int], list[StreamSample]] = defaultdict(list)
    for s in samples:
        grouped[(s.target, s.connections)].append(s)
    return {
        key: StreamRow(
            key[0], key[1],
            median([s.ttfb_p50_ms for s in group]), median([s.ttfb_p99_ms for s in group]),
            median([s.total_p50_ms for s in group]), median([s.total_p99_ms for s in group]),
            sum(s.streams for s in group), sum(s.failed for s in group), sum(s.hits for s in group),
            all(s.forwarded_ok for s in group),
        )
        for key, group in grouped.items()
    }


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "–"
    return f"{a / b:.2f}×"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


@dataclass(frozen=True, slots=True)
class Check:
    goal: str
    measured: str
    met: bool | None  # None: could not be measured


def checks(results: Results) -> list[Check]:
    rows = load_rows(results.samples)
    streams = stream_rows(results.streams)
    found: list[Check] = []

    def row(target: str, scenario: str, conns: int) -> LoadRow | None:
        return rows.get((target, scenario, conns))

    gw, bare = row("gateway", "chat", 16), row("bare", "chat", 16)
    if gw and bare:
        share = gw.rps / bare.rps
        found.append(Check("chat, 16 clients: req/s ≥ 80 % of bare", f"{share:.0%} ({gw.rps:,.0f} vs {bare.rps:,.0f})",
                           share >= 0.8))
        cpu = gw.cpu_us / bare.cpu_us
        found.append(Check("chat, 16 clients: CPU/request ≤ 1.25× bare",
                           f"{cpu:.2f}× ({gw.cpu_us:,.0f} vs {bare.cpu_us:,.0f} µs)", cpu <= 1.25))
    else:
        found.append(Check("chat, 16 clients vs bare", "not measured", None))
    gw, bare = row("gateway", "chat", 1), row("bare", "chat", 1)
    if gw and bare:
        added = gw.p50_ms - bare.p50_ms
        found.append(Check("chat, 1 client: added p50 over bare ≤ 0.3 ms", f"{added:+.2f} ms", added <= 0.3))
    else:
        found.append(Check("chat, 1 client: added p50 over bare ≤ 0.3 ms", "not measured", None))
    gs, bs = streams.get(("gateway", 16)), streams.get(("bare", 16))
    if gs and bs:
        added = gs.ttfb_p50_ms - bs.ttfb_p50_ms
        found.append(Check("stream, 16 clients: TTFB p50 within 0.5 ms of bare", f"{added:+.2f} ms",
                           added <= 0.5))
    else:
        found.append(Check("stream, 16 clients: TTFB p50 within 0.5 ms of bare", "not measured", None))
    rss = results.rss_loaded.get("gateway")
    found.append(Check("gateway RSS after load ≤ 100 MB", f"{rss / MB:.0f} MB" if rss else "not measured",
                       rss <= 100 * MB if rss else None))
    startup = results.startup.get("gateway", (None, ""))[0]
    found.append(Check("gateway start-up < 1 s", f"{startup:.2f} s" if startup else "not measured",
                       startup < 1 if startup else None))
    auth = results.scale.get("auth")
    if isinstance(auth, dict):
        hit = auth["hit_cycling_p50_us"]
        found.append(Check("auth cache hit < 20 µs", f"{hit:.2f} µs (p50, {auth['keys']:,} keys)", hit < 20))
    else:
        found.append(Check("auth cache hit < 20 µs", "not measured", None))
    usage = results.scale.get("usage")
    if isinstance(usage, dict) and "stats_ms" in usage:
        found.append(Check("usage stats over 1M rows < 100 ms",
                           f"{usage['stats_ms']:.1f} ms (slowest query, {usage.get('rows', 0):,} rows)",
                           usage["stats_ms"] < 100 if usage.get("rows", 0) >= 1_000_000 else None))
    else:
        found.append(Check("usage stats over 1M rows < 100 ms", "not measured", None))
    return found


def render(results: Results) -> str:
    rows = load_rows(results.samples)
    streams = stream_rows(results.streams)
    s = results.settings
    out: list[str] = []
    out.append(f"Run: {s['reps']} repetition(s), targets alternated in each, medians shown; wrk -t1, "
               f"{s['seconds']:g} s per load; {'pinned: proxies on core 0, fakes and load generator on core 1' if s['pinned'] else 'NOT pinned'}; "
               f"total {results.elapsed_s / 60:.1f} min.")
    out += [f"{line}" for line in results.environment]
    if results.retried:
        out.append(f"{results.retried} load(s) were measured again because other processes were busy "
                   f"meanwhile; the cleaner measurement is kept.")
    for target, why in results.skipped.items():
        out.append(f"**{target} did not run:** {why}")
    out.append("")

    out.append("### Load (wrk)")
    out.append("")
    header = ["target", "scenario", "clients", "req/s", "p50 ms", "p99 ms", "CPU µs/req",
              "req/s vs bare", "req/s vs LiteLLM", "CPU vs bare", "non-2xx", "sock err", "other load"]
    table = []
    for scenario in s["scenarios"]:
        for conns in s["connections"]:
            for target in results.targets:
                r = rows.get((target, scenario, conns))
                if r is None:
                    continue
                bare = rows.get(("bare", scenario, conns))
                lite = rows.get(("litellm", scenario, conns))
                table.append([target, scenario, str(conns), _num(r.rps, 0), _num(r.p50_ms), _num(r.p99_ms),
                              _num(r.cpu_us, 0), _ratio(r.rps, bare and bare.rps),
                              _ratio(r.rps, lite and lite.rps), _ratio(r.cpu_us, bare and bare.cpu_us),
                              str(r.non_2xx), str(r.socket_errors), f"{r.foreign_cores:.2f}"])
    out += _table(header, table)
    out.append("")
    out.append("_other load_: cores' worth of CPU used during the run by processes this bench did not "
               "start (median over repetitions); above about 0.2 the row was measured on a busy machine.")
    out.append("")

    out.append("### Streaming (20 chunks, 5 ms apart)")
    out.append("")
    header = ["target", "clients", "streams", "TTFB p50 ms", "TTFB p99 ms", "total p50 ms", "total p99 ms",
              "TTFB p50 vs bare", "failed"]
    table = []
    for conns in s["stream_connections"]:
        for target in results.targets:
            r = streams.get((target, conns))
            if r is None:
                continue
            bare = streams.get(("bare", conns))
            added = f"{r.ttfb_p50_ms - bare.ttfb_p50_ms:+.2f} ms" if bare else "–"
            table.append([target, str(conns), str(r.streams), _num(r.ttfb_p50_ms), _num(r.ttfb_p99_ms),
                          _num(r.total_p50_ms), _num(r.total_p99_ms), added, str(r.failed)])
    out += _table(header, table)
    out.append("")

    out.append("### Processes")
    out.append("")
    table = []
    for target in results.targets:
        startup, note = results.startup.get(target, (None, ""))
        idle, loaded = results.rss_idle.get(target), results.rss_loaded.get(target)
        table.append([target, f"{startup:.2f} s" if startup is not None else "–", note,
                      f"{idle / MB:.0f} MB" if idle else "–", f"{loaded / MB:.0f} MB" if loaded else "–"])
    out += _table(["target", "start-up", "measured as", "RSS idle", "RSS after load"], table)
    out.append("")

    out.append("### Targets")
    out.append("")
    table = [[c.goal, c.measured, {True: "met", False: "**not met**", None: "–"}[c.met]] for c in checks(results)]
    out += _table(["goal", "measured", ""], table)
    out.append("")

    out.append("### Every request forwarded")
    out.append("")
    out.append("Upstream hits against what the load generator counted, summed over repetitions. Each "
               "target has fake upstreams of its own; a run's hits are counted from its start to the start "
               "of the same target's next run, so a request forwarded late still counts for the run that sent "
               "it. wrk counts completed requests and stops mid-flight, so up to one request per connection "
               "may be forwarded without being counted: the check is completed ≤ hits ≤ sent. Streams are "
               "counted exactly.")
    out.append("")
    table = []
    by_key: dict[tuple[str, str, int], list[LoadSample]] = defaultdict(list)
    for sample in results.samples:
        by_key[(sample.target, sample.scenario, sample.connections)].append(sample)
    for (target, scenario, conns), group in sorted(by_key.items()):
        completed = sum(x.result.requests for x in group)
        sent = sum(x.result.sent for x in group)
        hits = sum(x.hits for x in group)
        ok = all(x.forwarded_ok for x in group)
        table.append([target, f"{scenario} ×{conns}", f"{completed:,}", f"{hits:,}", f"{sent:,}",
                      "ok" if ok else "**MISMATCH**"])
    for (target, conns), r in sorted(streams.items()):
        table.append([target, f"stream ×{conns}", f"{r.streams - r.failed:,}", f"{r.hits:,}", f"{r.streams:,}",
                      "ok" if r.forwarded_ok else "**MISMATCH**"])
    out += _table(["target", "load", "completed", "upstream hits", "sent", ""], table)
    out.append("")

    if results.scale:
        out.append("### Scale")
        out.append("")
        out += _scale_lines(results.scale)
        out.append("")
    for name, text in results.micro.items():
        out.append(f"### {name}")
        out.append("")
        out.append("```")
        out.append(text.rstrip())
        out.append("```")
        out.append("")
    if results.profile:
        out.append("### Profile: gateway under chat load, 16 clients")
        out.append("")
        out.append("```")
        out.append(results.profile.rstrip())
        out.append("```")
        out.append("")
    return "\n".join(out)


def _scale_lines(scale: dict[str, dict | str]) -> list[str]:
    lines: list[str] = []
    auth = scale.get("auth")
    if isinstance(auth, dict):
        lines.append(f"- Authentication, {auth['keys']:,} keys in SQLite: cache hit {auth['hit_cycling_p50_us']:.2f} µs p50 "
                     f"(p99 {auth['hit_cycling_p99_us']:.2f}) cycling through all cached keys, "
                     f"{auth['hit_hot_p50_us']:.2f} µs for one hot key; cold {auth['cold_no_bcrypt_us']:.0f} µs "
                     f"without bcrypt (p99 {auth['cold_no_bcrypt_p99_us']:.0f}), {auth['cold_bcrypt_ms']:.0f} ms "
                     f"with bcrypt cost {auth['bcrypt_rounds']}.")
        lines.append(f"- Memory, {auth['cached_keys']:,} cached keys: +{auth['cache_mb']:.0f} MB RSS "
                     f"({auth['bytes_per_cached_key']:.0f} B per key; process {auth['rss_cached_mb']:.0f} MB).")
    elif auth:
        lines.append(f"- Authentication: {auth}")
    usage = scale.get("usage")
    if isinstance(usage, dict):
        lines.append(f"- Usage stats: {usage.get('summary', usage)}")
    elif usage:
        lines.append(f"- Usage stats: {usage}")
    reload = scale.get("reload")
    if isinstance(reload, dict):
        lines.append(f"- Config of {reload['upstreams']} upstreams, {reload['plans']} plans, {reload['models']} models: "
                     f"build from files {reload['build_ms']:.0f} ms; reload with one edit {reload['reload_changed_ms']:.0f} ms; "
                     f"reload with nothing changed {reload['reload_unchanged_ms']:.0f} ms (median of {reload['rounds']}).")
    elif reload:
        lines.append(f"- Reload: {reload}")
    backends = scale.get("backends")
    if isinstance(backends, dict):
        for name, f in backends["targets"].items():
            lines.append(f"- {name}: {f['rps']:.0f} req/s, p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms, "
                         f"{f['cpu_us_per_request']:.0f} µs CPU per request ({backends['connections']} connections, "
                         f"median of {backends['rounds']} alternated rounds).")
        a = backends["admission"]
        lines.append(f"- One Redis admission (admit + settle): p50 {a['redis_p50_us']:.0f} µs, "
                     f"p99 {a['redis_p99_us']:.0f} µs; in-process p50 {a['memory_p50_us']:.1f} µs.")
    elif backends:
        lines.append(f"- Backends: {backends}")
    return lines
