"""The benchmark run: start everything, alternate the targets under the same
loads, and print (and save) one report.

    python -m bench [--quick] [--reps N] [--seconds S] [--targets fake,bare,gateway,litellm]
                    [--no-scale] [--no-micro] [--no-profile] [--update-readme]

Every process started here is stopped by its PID when the run ends, fails or
is interrupted; only 127.0.0.1 is used; every load is bounded in count or time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `python bench/run.py` as well as `python -m bench`
    sys.path.insert(0, REPO)

from bench import profile, wrk  # noqa: E402
from bench.load import HitLedger, measure_streams, measure_wrk  # noqa: E402
from bench.procs import ProcessSet, can_pin, machine_busy_seconds, rss_bytes  # noqa: E402
from bench.report import Results, render  # noqa: E402
from bench.stats import median  # noqa: E402
from bench.targets import LOAD_CORE, Target, start_bare, start_fake_direct, start_gateway, start_litellm  # noqa: E402

ALL_TARGETS = ("fake", "bare", "gateway", "litellm")
RESULTS_DIR = os.path.join(REPO, "bench", "results")
README = os.path.join(REPO, "bench", "README.md")
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
MICRO = ("auth_bench.py", "limiter_bench.py", "usage_bench.py", "transport_bench.py", "trace_bench.py",
         "cache_bench.py")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="One repetition, 2 s loads, smaller scale figures.")
    parser.add_argument("--reps", type=int, default=None, help="Repetitions (default 3, quick 1).")
    parser.add_argument("--seconds", type=float, default=None, help="Seconds per wrk load (default 4, quick 2).")
    parser.add_argument("--max-other-load", type=float, default=0.3,
                        help="Measure a load again when other processes used more cores than this meanwhile.")
    parser.add_argument("--retries", type=int, default=None,
                        help="Most such repeats in a run (default 8, quick 4).")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="Comma-separated subset of "
                        + ", ".join(ALL_TARGETS))
    parser.add_argument("--connections", default="1,16,64", help="wrk concurrencies.")
    parser.add_argument("--no-scale", action="store_true", help="Skip the scale figures.")
    parser.add_argument("--no-micro", action="store_true", help="Skip the other micro-benchmarks.")
    parser.add_argument("--no-profile", action="store_true", help="Skip the py-spy profile of the gateway.")
    parser.add_argument("--profile-seconds", type=int, default=None, help="Default 10, quick 5.")
    parser.add_argument("--startup-reps", type=int, default=3, help="Start-ups timed per target (LiteLLM: 1).")
    parser.add_argument("--keys", type=int, default=None, help="Keys for the auth scale figure (default 100000).")
    parser.add_argument("--update-readme", action="store_true", help="Paste the report into bench/README.md.")
    args = parser.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 4.0)
    args.retries = args.retries if args.retries is not None else (4 if args.quick else 8)
    args.profile_seconds = args.profile_seconds or (5 if args.quick else 10)
    args.keys = args.keys or (10_000 if args.quick else 100_000)
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}; choose from {', '.join(ALL_TARGETS)}")
    args.connections = [int(c) for c in args.connections.split(",")]
    return args


def _interrupt_on_sigterm() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _revision() -> str:
    """The commit measured, and whether the tree had uncommitted changes to the gateway."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "proxy"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    return f"{head or 'unknown'}{' with uncommitted changes in proxy/' if dirty else ''}"


def _busy_elsewhere(seconds: float = 1.0) -> float:
    """Cores' worth of CPU other processes use right now (nothing of ours runs yet)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    start_busy, start_own = machine_busy_seconds(), me.ru_utime + me.ru_stime
    time.sleep(seconds)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return max(0.0, (machine_busy_seconds() - start_busy) - (me.ru_utime + me.ru_stime - start_own)) / seconds


def _environment() -> list[str]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    import aiohttp
    busy = _busy_elsewhere()
    lines = [f"Machine: {os.cpu_count()} cores ({cpu}); Python {platform.python_version()}, aiohttp {aiohttp.__version__}; "
             f"other processes used {busy:.2f} cores at start. Gateway code: {_revision()}."]
    if busy > 0.3:
        lines.append(f"**Warning:** other processes were using {busy:.2f} cores when the run started: see the "
                     "_other load_ column for the rows they may have slowed; the alternation keeps comparisons fair.")
    return lines


def _compile_bytecode() -> None:
    # A deployed install has its .pyc files; without them every start-up would
    # pay for compiling the whole package (this machine sets PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "proxy", "bench"], cwd=REPO, env=env,
                   stdout=subprocess.DEVNULL, timeout=120, check=False)


def _start_targets(args, procs: ProcessSet, workdir: str, pin: bool, results: Results):
    _compile_bytecode()
    starters = {
        "fake": lambda: start_fake_direct(procs, pin=pin),
        "bare": lambda: start_bare(procs, pin=pin),
        "gateway": lambda: start_gateway(procs, workdir, pin=pin),
        "litellm": lambda: start_litellm(procs, workdir, pin=pin),
    }
    targets: list[Target] = []
    for name in args.targets:
        _log(f"starting {name}")
        try:
            target = starters[name]()
        except Exception as exc:  # a target that cannot start is reported, the others still run
            results.skipped[name] = f"{type(exc).__name__}: {exc}"
            _log(f"{name} did not start: {exc}")
            continue
        times = [target.startup_s]
        # One start-up is one sample of a noisy figure; LiteLLM's 10 s ones are taken once.
        for _ in range(args.startup_reps - 1 if name != "litellm" else 0):
            procs.stop(target.proc)
            target.proc, seconds, target.startup_note = target.launch()
            times.append(seconds)
        target.startup_s = median(times)
        targets.append(target)
        results.targets.append(name)
        shown = ", ".join(f"{t:.2f}" for t in times)
        results.startup[name] = (target.startup_s, target.startup_note + (f"; median of {shown} s" if len(times) > 1 else ""))
        results.rss_idle[name] = rss_bytes(target.proc.pid)
        _log(f"{name} answered {shown} s after spawn")
    return targets


def _measure(args, procs: ProcessSet, targets: list[Target], scripts: dict, pin: bool, results: Results) -> None:
    ledger = HitLedger()
    stream_plan = {1: 10 if args.quick else 25, 16: 64 if args.quick else 160}
    results.settings["stream_connections"] = list(stream_plan)
    _log("warming up every target")
    for target in targets:
        for scenario in wrk.SCENARIOS:
            wrk.run(target.base_url + wrk.SCENARIOS[scenario][0], scripts[(target.name, scenario)],
                    connections=16, seconds=1 if args.quick else 1.5, cpu=LOAD_CORE if pin else None)
        # Tracked, so anything the warm-up forwards late is counted here, not in the first real run.
        measure_streams(target, connections=4, streams=8, rep=0, procs=procs, ledger=ledger)
    retries_left = args.retries
    for rep in range(1, args.reps + 1):
        # Rotate the order every repetition, so no target always runs right after the same one.
        shift = (rep - 1) % len(targets)
        order = targets[shift:] + targets[:shift]
        for scenario in wrk.SCENARIOS:
            for conns in args.connections:
                for target in order:
                    sample = measure_wrk(target, scenario, scripts[(target.name, scenario)], connections=conns,
                                         seconds=args.seconds, rep=rep, pin=pin, procs=procs, ledger=ledger)
                    # A neighbour busy on our cores spoils a figure: measure once more, within a
                    # budget for the whole run, and keep the cleaner one.
                    if sample.foreign_cores > args.max_other_load and retries_left > 0:
                        retries_left -= 1
                        results.retried += 1
                        _log(f"rep {rep} {target.name} {scenario} ×{conns}: other load "
                             f"{sample.foreign_cores:.2f} cores; measuring again ({retries_left} retries left)")
                        again = measure_wrk(target, scenario, scripts[(target.name, scenario)],
                                            connections=conns, seconds=args.seconds, rep=rep, pin=pin,
                                            procs=procs, ledger=ledger)
                        sample = min(sample, again, key=lambda s: s.foreign_cores)
                    results.samples.append(sample)
                    r = sample.result
                    _log(f"rep {rep} {target.name:8} {scenario:10} ×{conns:<3} {r.rps:8,.0f} req/s "
                         f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:7.2f} ms {sample.cpu_us_per_request:6.0f} µs/req "
                         f"non-2xx {r.non_2xx} hits {sample.hits}/{r.requests} other load {sample.foreign_cores:.2f} cores")
        for conns, streams in stream_plan.items():
            for target in order:
                sample = measure_streams(target, connections=conns, streams=streams, rep=rep, procs=procs,
                                         ledger=ledger)
                results.streams.append(sample)
                # The Responses API's typed stream, logged beside chat's (the report tables stay chat's).
                typed = measure_streams(target, connections=conns, streams=streams, rep=rep, procs=procs,
                                        ledger=ledger, api="responses")
                _log(f"rep {rep} {target.name:8} responses-stream ×{conns:<3} TTFB p50 {typed.ttfb_p50_ms:6.2f} ms "
                     f"p99 {typed.ttfb_p99_ms:6.2f} ms total p50 {typed.total_p50_ms:6.1f} ms "
                     f"failed {typed.failed} hits {typed.hits}/{typed.streams}")
                _log(f"rep {rep} {target.name:8} stream     ×{conns:<3} TTFB p50 {sample.ttfb_p50_ms:6.2f} ms "
                     f"p99 {sample.ttfb_p99_ms:6.2f} ms total p50 {sample.total_p50_ms:6.1f} ms "
                     f"failed {sample.failed} hits {sample.hits}/{sample.streams}"
                     + (f" {sample.errors[0]}" if sample.errors else ""))
    ledger.finish(targets)
    for target in targets:
        results.rss_loaded[target.name] = rss_bytes(target.proc.pid)


def _profile(args, targets: list[Target], scripts: dict, workdir: str, pin: bool) -> str:
    gateway = next((t for t in targets if t.name == "gateway"), None)
    if gateway is None:
        return ""
    if not profile.available():
        return "py-spy is not installed (pip install py-spy); no profile."
    _log(f"profiling the gateway for {args.profile_seconds} s under chat load, 16 clients")
    out = os.path.join(workdir, "gateway-profile.txt")
    spy = profile.start(gateway.proc.pid, args.profile_seconds, out, cpu=LOAD_CORE if pin else None)
    time.sleep(0.5)  # py-spy attaches before the load starts
    wrk.run(gateway.base_url + wrk.SCENARIOS["chat"][0], scripts[("gateway", "chat")], connections=16,
            seconds=args.profile_seconds + 1, cpu=LOAD_CORE if pin else None)
    return profile.finish(spy, out, timeout=args.profile_seconds + 30)


def _run_json(argv: list[str], timeout: float) -> dict | str:
    try:
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if done.returncode != 0:
        return f"failed ({done.returncode}): {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _scale(args, results: Results) -> None:
    _log(f"scale: authentication with {args.keys:,} keys")
    results.scale["auth"] = _run_json(["-m", "bench.scale_auth", "--keys", str(args.keys), "--json"], 600)
    _log("scale: reload of 500 upstreams and 200 plans")
    results.scale["reload"] = _run_json(["-m", "bench.scale_reload", "--json",
                                         "--rounds", "3"], 300)
    _log("scale: SQLite+memory against PostgreSQL+Redis, --workers 1 and 2, next to the bare proxy")
    results.scale["backends"] = _run_json(["-m", "bench.scale_backends", "--json"], 180)


def _micro_argv(name: str, quick: bool) -> list[str]:
    if not quick:
        # Its default (200,000 per scenario, best of 15) alone takes a minute.
        return ["50000"] if name == "limiter_bench.py" else []
    return {"usage_bench.py": ["--rows", "100000", "--recorder-rows", "20000"],
            "limiter_bench.py": ["50000"], "auth_bench.py": ["--hits", "50000"],
            "transport_bench.py": ["--seconds", "1", "--reps", "1"],
            "trace_bench.py": ["--requests", "500", "--rounds", "1"],
            "cache_bench.py": ["--requests", "500"]}.get(name, [])


def _micro(args, results: Results) -> None:
    for name in MICRO:
        path = os.path.join(REPO, "bench", name)
        if not os.path.exists(path):
            results.micro[name] = "(not present yet)"
            continue
        _log(f"micro-benchmark: {name}")
        try:
            done = subprocess.run([sys.executable, path, *_micro_argv(name, args.quick)], capture_output=True,
                                  text=True, timeout=600, cwd=REPO)
            text = done.stdout + (f"\n(exit {done.returncode}) {done.stderr[-800:]}" if done.returncode else "")
        except subprocess.TimeoutExpired:
            text = "timed out after 600 s"
        results.micro[name] = text
        if name == "usage_bench.py":
            results.scale["usage"] = usage_figure(text)


def usage_figure(text: str) -> dict | str:
    """The slowest stats query usage_bench.py timed, and over how many rows."""
    rows = re.search(r"^database: ([\d,]+) usage rows", text, re.MULTILINE)
    section = re.search(r"^stats[^\n]*:\n((?:[ \t]+[^\n]*\n?)+)", text, re.MULTILINE)
    if not rows or not section:
        return "usage_bench.py printed no stats timings"
    timings = [(float(m.group(2)), m.group(1).strip())
               for m in re.finditer(r"^\s+(.*?)\s+([\d.]+) ms$", section.group(1), re.MULTILINE)]
    if not timings:
        return "usage_bench.py printed no stats timings"
    worst, label = max(timings)
    return {"stats_ms": worst, "rows": int(rows.group(1).replace(",", "")),
            "summary": f"slowest of {len(timings)} stats queries over {rows.group(1)} rows: {worst:.1f} ms ({label})"}


def _write(results: Results, text: str, update_readme: bool) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, "latest.md")
    stamp = time.strftime("%Y-%m-%d %H:%M")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"# Benchmark results, {stamp}\n\n{text}\n")
    with open(os.path.join(RESULTS_DIR, "latest.json"), "w", encoding="utf-8") as fh:
        json.dump({
            "settings": results.settings, "elapsed_s": results.elapsed_s,
            "samples": [{**asdict(s), "result": asdict(s.result)} for s in results.samples],
            "streams": [asdict(s) for s in results.streams], "startup": results.startup,
            "rss_idle": results.rss_idle, "rss_loaded": results.rss_loaded, "skipped": results.skipped,
            "scale": results.scale,
        }, fh, indent=1, default=str)
    if update_readme and os.path.exists(README):
        with open(README, encoding="utf-8") as fh:
            readme = fh.read()
        if README_START in readme and README_END in readme:
            head, rest = readme.split(README_START, 1)
            _, tail = rest.split(README_END, 1)
            with open(README, "w", encoding="utf-8") as fh:
                fh.write(f"{head}{README_START}\n_Run of {stamp}._\n\n{text}\n{README_END}{tail}")
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _interrupt_on_sigterm()
    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {LOAD_CORE})  # the streaming client and the readiness polls run here
    started = time.monotonic()
    results = Results(settings={"reps": args.reps, "seconds": args.seconds, "connections": args.connections,
                                "scenarios": list(wrk.SCENARIOS), "pinned": pin, "quick": args.quick,
                                "stream_connections": []},
                      environment=_environment())
    workdir = tempfile.mkdtemp(prefix="bluesminds-bench-")
    _log(f"work directory {workdir} (process logs are there)")
    try:
        with ProcessSet(workdir) as procs:
            targets = _start_targets(args, procs, workdir, pin, results)
            scripts = {(t.name, scenario): wrk.write_script(workdir, f"{t.name}-{scenario}", body, t.authorization)
                       for t in targets for scenario, (_, body) in wrk.SCENARIOS.items()}
            if targets:
                _measure(args, procs, targets, scripts, pin, results)
            if not args.no_profile:
                results.profile = _profile(args, targets, scripts, workdir, pin)
        if not args.no_scale:
            _scale(args, results)
        if not args.no_micro:
            _micro(args, results)
    except KeyboardInterrupt:
        _log("interrupted; every process this run started has been stopped")
        raise SystemExit(130)
    results.elapsed_s = time.monotonic() - started
    text = render(results)
    print(text)
    path = _write(results, text, args.update_readme)
    _log(f"report written to {path}" + (" and bench/README.md" if args.update_readme else ""))


if __name__ == "__main__":
    main()
