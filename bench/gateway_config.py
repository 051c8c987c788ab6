"""The gateway's config for the bench: what a real deployment would run.

Two upstreams, real key authentication (bcrypt at the default cost on first
sight, then the cache), a plan with every kind of limit switched on but set
high enough never to refuse, usage accounting and metrics on, access log off
(as most deployments behind a load balancer run it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

PLAN = "bench"
BCRYPT_ROUNDS = 12


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    config_dir: str
    db_path: str
    plan: str = PLAN
    bcrypt_rounds: int = BCRYPT_ROUNDS


def gateway_sections(upstreams: list[str], *, port: int) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": port, "max_body": "4MiB", "log_level": "warning",
                   "access_log": False},
        "database": {"path": "data/bench.db", "flush_interval": "250ms", "flush_rows": 500},
        "auth": {"signup": "closed", "default_plan": PLAN, "bcrypt_rounds": BCRYPT_ROUNDS},
        "health": {"path": "/health/liveliness", "interval": "10s", "timeout": "2s",
                   "eject_after": 3, "cooldown": "5s", "max_cooldown": "2m"},
        "retry": {"attempts": 3, "backoff": "25ms", "max_backoff": "1s"},
        "models": {
            "gpt-4o-mini": {"aliases": ["gpt-mini"], "owned_by": "openai",
                            "pricing": {"input": 0.15, "output": 0.60, "cached_input": 0.075}},
            "text-embedding-3-small": {"kind": "embedding", "owned_by": "openai",
                                       "pricing": {"input": 0.02, "output": 0}},
        },
        "plans": {
            PLAN: {
                "rpm": 10_000_000, "tpm": 10_000_000_000,
                "requests_per_day": 1_000_000_000, "tokens_per_month": 10**13,
                "monthly_budget_usd": 1_000_000_000, "max_concurrent": 10_000, "models": "*",
            },
            "free": {"rpm": 20, "tpm": 40_000, "requests_per_day": 500,
                     "models": ["gpt-4o-mini", "text-embedding-3-small"]},
        },
        "upstreams": [
            {"name": f"upstream-{chr(ord('a') + i)}", "url": url, "weight": 1, "priority": 1,
             "models": "*", "region": "local",
             "timeouts": {"connect": "2s", "first_byte": "60s", "total": "10m"}}
            for i, url in enumerate(upstreams)
        ],
    }


def write_gateway_config(config_dir: str, upstreams: list[str], *, port: int) -> GatewayConfig:
    os.makedirs(config_dir, exist_ok=True)
    sections = gateway_sections(upstreams, port=port)
    main = {k: v for k, v in sections.items() if k != "upstreams"}
    with open(os.path.join(config_dir, "gateway.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump(main, fh, sort_keys=False)
    with open(os.path.join(config_dir, "upstreams.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump({"upstreams": sections["upstreams"]}, fh, sort_keys=False)
    # The database in a folder of its own below the config, as the bundled config has it
    # (data/): the config watcher then never wakes for the writes the load makes.
    os.makedirs(os.path.join(config_dir, "data"), exist_ok=True)
    return GatewayConfig(config_dir, os.path.join(config_dir, "data", "bench.db"))
