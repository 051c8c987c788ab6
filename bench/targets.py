"""Starting each thing the bench measures, and what it took to get a first answer.

    fake      the fake upstream called directly (the ceiling)
    bare      bench/bare_proxy.py in front of a fake (the floor for a proxy)
    gateway   `bluesminds serve` in front of two fakes, real keys in SQLite
    litellm   LiteLLM's proxy in front of a fake (no database, master key)

Every target gets fake upstreams of its own (the same program with the same
settings), so each upstream hit is known to come from that target, even one
forwarded late. Proxies run on core 0; the fakes (and the load generator) on
core 1.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable

from bench import control
from bench.gateway_config import write_gateway_config
from bench.procs import ProcessSet, Spawned
from bench.seed import seed_keys
from bench.wrk import CHAT_BODY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY_CORE = 0
LOAD_CORE = 1
STREAM_CHUNKS = 20
CHUNK_DELAY = 0.005


Launch = Callable[[], tuple[Spawned, float, str]]  # spawn once more: (process, start-up s, how measured)


@dataclass
class Target:
    name: str
    base_url: str
    authorization: str | None
    proc: Spawned  # the process whose CPU and memory are measured
    upstreams: list[str]  # its own fake upstreams: every hit on them came through this target
    startup_s: float | None = None
    startup_note: str = ""
    launch: Launch | None = None  # start the same process again, same port and config

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _core(pin: bool, core: int) -> int | None:
    return core if pin else None


def _launcher(procs: ProcessSet, name: str, argv: list[str], ready: Callable[[Spawned], str], *,
              cpu: int | None, **spawn) -> Launch:
    """`ready(proc)` waits for the first answer and says how start-up was measured."""
    def launch() -> tuple[Spawned, float, str]:
        proc = procs.spawn(name, argv, cpu=cpu, **spawn)
        note = ready(proc)
        return proc, time.monotonic() - proc.started, note
    return launch


def _first(url: str, what: str, **probe) -> Callable[[Spawned], str]:
    def ready(proc: Spawned) -> str:
        control.wait_until(proc, control.answers(url, **probe), timeout=60)
        return what
    return ready


def _target(name: str, url: str, authorization: str | None, upstreams: list[str], launch: Launch) -> Target:
    proc, startup, note = launch()
    return Target(name, url, authorization, proc, upstreams, startup, note, launch)


def start_fake(procs: ProcessSet, name: str, *, pin: bool) -> tuple[str, Launch]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    launch = _launcher(procs, f"fake-{name}", [
        sys.executable, "-m", "bench.fake", "--port", str(port), "--name", name,
        "--stream-chunks", str(STREAM_CHUNKS), "--chunk-delay", str(CHUNK_DELAY),
    ], _first(url + "/_fake/stats", "spawn → /_fake/stats"), cpu=_core(pin, LOAD_CORE), cwd=REPO)
    return url, launch


def _upstream(procs: ProcessSet, name: str, *, pin: bool) -> str:
    url, launch = start_fake(procs, name, pin=pin)
    launch()
    return url


def start_fake_direct(procs: ProcessSet, *, pin: bool) -> Target:
    url, launch = start_fake(procs, "direct", pin=pin)
    return _target("fake", url, None, [url], launch)


def start_bare(procs: ProcessSet, *, pin: bool) -> Target:
    upstream = _upstream(procs, "for-bare", pin=pin)
    url = f"http://127.0.0.1:{free_port()}"
    launch = _launcher(procs, "bare", [sys.executable, "-m", "bench.bare_proxy", "--port", url.rsplit(":", 1)[1],
                                       "--upstream", upstream],
                       _first(url + "/v1/chat/completions", "spawn → first 200 chat", body=CHAT_BODY),
                       cpu=_core(pin, PROXY_CORE), cwd=REPO)
    return _target("bare", url, None, [upstream], launch)


def start_gateway(procs: ProcessSet, workdir: str, *, pin: bool, bulk_keys: int = 1_000) -> Target:
    from proxy.cli.accounts import create_user_and_key  # lands with the gateway; imported late

    upstreams = [_upstream(procs, f"for-gateway-{name}", pin=pin) for name in "ab"]
    config_dir = os.path.join(workdir, "gateway-config")
    port = free_port()
    config = write_gateway_config(config_dir, upstreams, port=port)
    # Other tenants' keys, so the key table is not a one-row toy.
    seed_keys(config.db_path, bulk_keys, plan=config.plan, rounds=4)
    _, key = create_user_and_key(config.db_path, "bench@bench.local", "bench account password",
                                 config.plan, "bench", bcrypt_rounds=config.bcrypt_rounds)
    url = f"http://127.0.0.1:{port}"
    authorization = f"Bearer {key}"

    def ready(proc: Spawned) -> str:
        listening = control.wait_until(proc, control.answers(url + "/healthz"), timeout=60)
        control.wait_until(proc, control.answers(url + "/v1/models", headers={"Authorization": authorization}),
                           timeout=60)
        return (f"spawn → /healthz {listening:.2f} s → first 200 /v1/models with the key "
                f"(its bcrypt check at cost {config.bcrypt_rounds} included)")

    launch = _launcher(procs, "gateway", [sys.executable, "-m", "proxy", "serve", "--config", config_dir,
                                          "--port", str(port)], ready, cpu=_core(pin, PROXY_CORE), cwd=REPO)
    return _target("gateway", url, authorization, upstreams, launch)


def start_litellm(procs: ProcessSet, workdir: str, *, pin: bool) -> Target:
    sys.path.insert(0, REPO)
    from tests import litellm_process as litellm

    if not litellm.available():
        raise RuntimeError(f"LiteLLM is not installed at {litellm.VENV}; run scripts/install-litellm")
    upstream = _upstream(procs, "for-litellm", pin=pin)
    config_path = os.path.join(workdir, "litellm.yaml")
    litellm.write_config(config_path, upstream_base=upstream + "/v1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    authorization = f"Bearer {litellm.MASTER_KEY}"

    def ready(proc: Spawned) -> str:
        live = control.wait_until(proc, control.answers(url + "/health/liveliness"), timeout=180, interval=0.02)
        control.wait_until(proc, control.answers(url + "/v1/chat/completions", body=CHAT_BODY,
                                                 headers={"Authorization": authorization}), timeout=60)
        return f"spawn → /health/liveliness {live:.2f} s → first 200 chat"

    launch = _launcher(procs, "litellm", [litellm.EXECUTABLE, "--config", config_path, "--host", "127.0.0.1",
                                          "--port", str(port), "--num_workers", "1"], ready,
                       cpu=_core(pin, PROXY_CORE), env={**os.environ, **litellm.OFFLINE_ENV}, cwd=workdir)
    return _target("litellm", url, authorization, [upstream], launch)
