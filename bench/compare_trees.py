"""The gateway of several source trees (commits checked out as worktrees) and the
bare proxy, alternated under the same wrk loads in one run: CPU per request,
requests/s and latency, and each gateway's CPU per request over the bare
proxy's in the same repetition (the figure a shared, noisy machine keeps fair).

    git worktree add --detach /tmp/old e4e5e5d
    python bench/compare_trees.py old=/tmp/old new=. [--reps 3] [--seconds 4] [--connections 1,16]

Each tree's gateway runs that tree's code (its own PYTHONPATH and working
directory) on the config and keys that tree's own bench module writes, in front
of fake upstreams of its own; pinning, CPU accounting and the retry on foreign
load are the ones `python -m bench` uses. Every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench import control, wrk  # noqa: E402
from bench.load import HitLedger, LoadSample, measure_wrk  # noqa: E402
from bench.procs import ProcessSet, can_pin  # noqa: E402
from bench.stats import median  # noqa: E402
from bench.targets import LOAD_CORE, PROXY_CORE, Target, _upstream, free_port, start_bare  # noqa: E402

# Run inside each tree: its own config writer and account helper (older trees
# had the account helper at proxy.cli_accounts).
_SETUP = r'''
import json, sys
from bench.gateway_config import write_gateway_config
from bench.seed import seed_keys
try:
    from proxy.cli.accounts import create_user_and_key
except ImportError:
    from proxy.cli_accounts import create_user_and_key
config = write_gateway_config(sys.argv[1], json.loads(sys.argv[2]), port=int(sys.argv[3]))
seed_keys(config.db_path, 1000, plan=config.plan, rounds=4)
_, key = create_user_and_key(config.db_path, "bench@bench.local", "bench account password", config.plan,
                             "bench", bcrypt_rounds=config.bcrypt_rounds)
print(key)
'''


def start_tree_gateway(procs: ProcessSet, workdir: str, name: str, tree: str, *, pin: bool) -> Target:
    tree = os.path.abspath(tree)
    upstreams = [_upstream(procs, f"{name}-{suffix}", pin=pin) for suffix in "ab"]
    config_dir = os.path.join(workdir, f"config-{name}")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, "-c", _SETUP, config_dir, json.dumps(upstreams), str(port)], env=env,
                         cwd=tree, capture_output=True, text=True, check=True, timeout=300)
    authorization = "Bearer " + out.stdout.strip().splitlines()[-1]
    url = f"http://127.0.0.1:{port}"
    proc = procs.spawn(name, [sys.executable, "-m", "proxy", "serve", "--config", config_dir, "--port", str(port)],
                       cpu=PROXY_CORE if pin else None, cwd=tree, env=env)
    control.wait_until(proc, control.answers(url + "/healthz"), timeout=60)
    control.wait_until(proc, control.answers(url + "/v1/models", headers={"Authorization": authorization}),
                       timeout=60)
    return Target(name, url, authorization, proc, upstreams)


def _row(name: str, conns: int, samples: list[LoadSample], ratios: list[float]) -> str:
    return (f"| {name} | {conns} | {median([s.result.rps for s in samples]):,.0f} | "
            f"{median([s.cpu_us_per_request for s in samples]):.0f} | "
            f"{median(ratios):.2f}x | {median([s.result.p50_ms for s in samples]):.2f} / "
            f"{median([s.result.p99_ms for s in samples]):.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="name=path of a source tree")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--scenario", default="chat", choices=sorted(wrk.SCENARIOS))
    parser.add_argument("--max-other-load", type=float, default=0.3)
    parser.add_argument("--retries", type=int, default=8)
    args = parser.parse_args(argv)
    pin = can_pin()
    workdir = tempfile.mkdtemp(prefix="bench-trees-")
    print(f"work directory {workdir}", file=sys.stderr)
    path, body = wrk.SCENARIOS[args.scenario]
    connections = [int(c) for c in args.connections.split(",")]
    with ProcessSet(workdir) as procs:
        targets = [start_bare(procs, pin=pin)]
        for spec in args.trees:
            name, _, tree = spec.partition("=")
            targets.append(start_tree_gateway(procs, workdir, name, tree or ".", pin=pin))
        scripts = {t.name: wrk.write_script(workdir, t.name, body, t.authorization) for t in targets}
        for t in targets:  # warm-up: first bcrypt check, pooled connections, caches
            wrk.run(t.base_url + path, scripts[t.name], connections=16, seconds=1.5, cpu=LOAD_CORE if pin else None)
        ledger = HitLedger()
        samples: dict[tuple[str, int], list[LoadSample]] = {}
        retries = args.retries
        for rep in range(args.reps):
            order = targets[rep % len(targets):] + targets[:rep % len(targets)]
            for conns in connections:
                for t in order:
                    sample = measure_wrk(t, args.scenario, scripts[t.name], connections=conns, seconds=args.seconds,
                                         rep=rep, pin=pin, procs=procs, ledger=ledger)
                    if sample.foreign_cores > args.max_other_load and retries > 0:
                        retries -= 1
                        again = measure_wrk(t, args.scenario, scripts[t.name], connections=conns,
                                            seconds=args.seconds, rep=rep, pin=pin, procs=procs, ledger=ledger)
                        sample = min(sample, again, key=lambda s: s.foreign_cores)
                    samples.setdefault((t.name, conns), []).append(sample)
                    print(f"rep {rep} {t.name} ×{conns}: {sample.result.rps:,.0f} req/s, "
                          f"{sample.cpu_us_per_request:.0f} µs/request, other load {sample.foreign_cores:.2f}",
                          file=sys.stderr, flush=True)
        ledger.finish(targets)
    print("| target | clients | req/s | CPU µs/request | vs bare (same rep) | p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for conns in connections:
        bare = {s.rep: s.cpu_us_per_request for s in samples[("bare", conns)]}
        for t in targets:
            ss = samples[(t.name, conns)]
            print(_row(t.name, conns, ss, [s.cpu_us_per_request / bare[s.rep] for s in ss]))
    bad = [s for ss in samples.values() for s in ss if s.result.non_2xx or not s.forwarded_ok]
    if bad:
        print(f"**{len(bad)} runs had non-2xx answers or requests not forwarded**")


if __name__ == "__main__":
    main()
