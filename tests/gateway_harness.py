"""A real gateway on 127.0.0.1 in front of real fake upstreams, for end-to-end tests.

`GatewayHarness` writes a config directory, creates a user and key in a real
SQLite file, and runs the app with the same runner options `bluesminds serve`
uses (handler cancellation on client disconnect).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from proxy import server
from proxy.app import create_app
from proxy.cli.accounts import create_user_and_key

BASE_CONFIG: dict[str, Any] = {
    "server": {"host": "127.0.0.1", "port": 0, "log_level": "warning"},
    "database": {"path": "gateway.db", "flush_interval": "50ms"},
    "auth": {"bcrypt_rounds": 4, "default_plan": "test"},
    # Probes are triggered explicitly in tests; passive ejection reacts to traffic.
    "health": {"interval": "1h", "timeout": "1s", "eject_after": 2, "cooldown": "200ms", "max_cooldown": "1s"},
    "retry": {"attempts": 3, "backoff": "1ms", "max_backoff": "5ms"},
}

MODELS = {
    "gpt-4o-mini": {"aliases": ["mini"], "pricing": {"input": 0.15, "output": 0.6}},
    "text-embedding-3-small": {"kind": "embedding", "pricing": {"input": 0.02, "output": 0}},
}

PLANS = {"test": {"rpm": 100000, "tpm": 100000000, "models": "*"}}


def upstream_entry(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "models": "*", **extra}


@dataclass
class GatewayHarness:
    config_dir: str
    app: web.Application | None = None
    runner: server.GatewayRunner | None = None
    url: str = ""
    key: str = ""
    user_id: int = 0
    sections: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def write(cls, config_dir: str, upstreams: list[dict[str, Any]], **overrides: Any) -> "GatewayHarness":
        os.makedirs(config_dir, exist_ok=True)
        sections = {k: dict(v) for k, v in BASE_CONFIG.items()}
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(sections.get(key), dict):
                sections[key].update(value)
            else:
                sections[key] = value
        sections.setdefault("models", MODELS)
        sections.setdefault("plans", PLANS)
        sections["upstreams"] = upstreams
        harness = cls(config_dir=config_dir, sections=sections)
        harness.save()
        return harness

    def save(self) -> None:
        main = {k: v for k, v in self.sections.items() if k != "upstreams"}
        _write_yaml(os.path.join(self.config_dir, "gateway.yaml"), main)
        _write_yaml(os.path.join(self.config_dir, "upstreams.yaml"), {"upstreams": self.sections["upstreams"]})

    @property
    def db_settings(self):
        """The database the gateway uses: SQLite at db_path, or the PostgreSQL database
        of this test on the suite's PostgreSQL pass. Built from the database section
        alone, so it works before the rest of the config can load (secrets not yet set)."""
        from proxy.config.build import DATABASE_URL_ENV
        from proxy.config.snapshot import DatabaseSettings

        url = self.sections["database"].get("url") or os.environ.get(DATABASE_URL_ENV)
        return DatabaseSettings(path=self.db_path, url=url)

    def store(self):
        """A store on the gateway's database, as another process (the CLI) opens it."""
        from proxy.store import open_store

        return open_store(self.db_settings)

    @property
    def db_path(self) -> str:
        return os.path.join(self.config_dir, self.sections["database"]["path"])

    async def start(self, *, plan: str = "test", email: str = "tenant@example.com",
                    clock=None) -> "GatewayHarness":
        if not self.key:
            self.user_id, self.key = create_user_and_key(self.db_settings, email, "correct horse battery", plan, "e2e",
                                                        bcrypt_rounds=4)
        self.app = create_app(self.config_dir) if clock is None else create_app(self.config_dir, clock=clock)
        self.runner, port = await server.start(self.app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _write_yaml(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, path)


async def serve_process(config_dir: str, port: int, *, env: dict[str, str] | None = None,
                        python_args: tuple[str, ...] = ("-m", "proxy")) -> subprocess.Popen:
    """`serve` as a real process (SIGTERM, kill -9), returned once /healthz answers 200."""
    proc = subprocess.Popen([sys.executable, *python_args, "serve", "--config", config_dir, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # a process start has no event to await
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError(proc.stderr.read().decode())

