"""Scale figure: reloading a config of 500 upstreams and 200 plans.

    python -m bench.scale_reload [--upstreams 500] [--plans 200] [--json]

Times, in-process: building the snapshot from files (`load_config`), a reload
that finds nothing changed (the digest compare short-circuits), and a reload
after one upstream's weight was edited (build, compare, swap, listeners).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

import yaml

from proxy.config import load_config
from proxy.config.holder import ConfigHolder

from bench.gateway_config import gateway_sections
from bench.stats import median

MODELS = 40


def big_sections(upstreams: int, plans: int) -> dict:
    sections = gateway_sections([], port=8080)
    models = {f"model-{i:02d}": {"owned_by": "bench", "aliases": [f"alias-{i:02d}"],
                                 "pricing": {"input": 0.1 + i / 100, "output": 0.4 + i / 100}}
              for i in range(MODELS)}
    sections["models"] = {**sections["models"], **models}
    names = sorted(sections["models"])
    count = len(names)
    sections["upstreams"] = [
        {"name": f"litellm-{i:03d}", "url": f"http://127.0.0.1:{20000 + i}", "weight": 1 + i % 5,
         "priority": 1 + i % 3, "region": f"region-{i % 8}",
         "models": [names[(i + j) % count] for j in range(8)],
         "timeouts": {"connect": "2s", "first_byte": "60s", "total": "10m"}}
        for i in range(upstreams)
    ]
    sections["plans"] = {**sections["plans"], **{
        f"plan-{i:03d}": {"rpm": 60 + i, "tpm": 100_000 + i * 1000, "requests_per_day": 10_000 + i,
                          "tokens_per_month": 10_000_000 + i, "monthly_budget_usd": 10 + i,
                          "max_concurrent": 4 + i % 60, "models": [names[(i + j) % count] for j in range(10)],
                          "price_usd_month": i % 50}
        for i in range(plans - len(sections["plans"]))
    }}
    return sections


def write(config_dir: str, sections: dict) -> None:
    main = {k: v for k, v in sections.items() if k != "upstreams"}
    for name, data in (("gateway.yaml", main), ("upstreams.yaml", {"upstreams": sections["upstreams"]})):
        tmp = os.path.join(config_dir, name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh, sort_keys=False)
        os.replace(tmp, os.path.join(config_dir, name))


async def _reloads(holder: ConfigHolder, config_dir: str, sections: dict, rounds: int) -> tuple[list, list]:
    unchanged, changed = [], []
    for i in range(rounds):
        start = time.perf_counter()
        result = await holder.reload(reason="bench")
        unchanged.append(time.perf_counter() - start)
        assert not result.changed and result.error is None, result
        sections["upstreams"][0]["weight"] = 10 + i % 2
        write(config_dir, sections)
        start = time.perf_counter()
        result = await holder.reload(reason="bench")
        changed.append(time.perf_counter() - start)
        assert result.changed and result.error is None, result
    return unchanged, changed


def measure(upstreams: int, plans: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as config_dir:
        sections = big_sections(upstreams, plans)
        write(config_dir, sections)
        builds = []
        for _ in range(rounds):
            start = time.perf_counter()
            snapshot = load_config(config_dir)
            builds.append(time.perf_counter() - start)
        holder = ConfigHolder(config_dir, snapshot)
        holder.subscribe(lambda old, new: None)
        unchanged, changed = asyncio.run(_reloads(holder, config_dir, sections, rounds))
        return {
            "upstreams": len(snapshot.upstreams), "plans": len(snapshot.plans), "models": len(snapshot.models),
            "build_ms": median(builds) * 1e3, "reload_unchanged_ms": median(unchanged) * 1e3,
            "reload_changed_ms": median(changed) * 1e3, "rounds": rounds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstreams", type=int, default=500)
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    args = parser.parse_args()
    found = measure(args.upstreams, args.plans, args.rounds)
    if args.json:
        print(json.dumps(found))
        return
    print(f"config of {found['upstreams']} upstreams, {found['plans']} plans, {found['models']} models "
          f"(median of {found['rounds']}):")
    print(f"  build from files        {found['build_ms']:8.1f} ms")
    print(f"  reload, nothing changed {found['reload_unchanged_ms']:8.1f} ms")
    print(f"  reload, one edit        {found['reload_changed_ms']:8.1f} ms")


if __name__ == "__main__":
    main()
