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
from dataclasses import dataclass

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


@dataclass
class Target:
    name: str
    base_url: str
    authorization: str | None
    proc: Spawned  # the process whose CPU and memory are measured
    upstreams: list[str]  # its own fake upstreams: every hit on them came through this target
    startup_s: float | None = None
    startup_note: str = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _core(pin: bool, core: int) -> int | None:
    return core if pin else None


def start_fake(procs: ProcessSet, name: str, *, pin: bool) -> tuple[str, Spawned, float]:
    port = free_port()
    proc = procs.spawn(f"fake-{name}", [
        sys.executable, "-m", "bench.fake", "--port", str(port), "--name", name,
        "--stream-chunks", str(STREAM_CHUNKS), "--chunk-delay", str(CHUNK_DELAY),
    ], cpu=_core(pin, LOAD_CORE), cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    startup = control.wait_until(proc, control.answers(url + "/_fake/stats"), timeout=30)
    return url, proc, startup


def start_fake_direct(procs: ProcessSet, *, pin: bool) -> Target:
    url, proc, startup = start_fake(procs, "direct", pin=pin)
    return Target("fake", url, None, proc, [url], startup, "spawn → /_fake/stats")


def start_bare(procs: ProcessSet, *, pin: bool) -> Target:
    upstream, _, _ = start_fake(procs, "for-bare", pin=pin)
    port = free_port()
    proc = procs.spawn("bare", [sys.executable, "-m", "bench.bare_proxy", "--port", str(port),
                                "--upstream", upstream], cpu=_core(pin, PROXY_CORE), cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    startup = control.wait_until(proc, control.answers(url + "/v1/chat/completions", body=CHAT_BODY),
                                 timeout=30)
    return Target("bare", url, None, proc, [upstream], startup, "spawn → first 200 chat")


def start_gateway(procs: ProcessSet, workdir: str, *, pin: bool, bulk_keys: int = 1_000) -> Target:
    from proxy.cli_accounts import create_user_and_key  # lands with the gateway; imported late

    upstreams = [start_fake(procs, f"for-gateway-{name}", pin=pin)[0] for name in "ab"]
    config_dir = os.path.join(workdir, "gateway-config")
    port = free_port()
    config = write_gateway_config(config_dir, upstreams, port=port)
    # Other tenants' keys, so the key table is not a one-row toy.
    seed_keys(config.db_path, bulk_keys, plan=config.plan, rounds=4)
    _, key = create_user_and_key(config.db_path, "bench@bench.local", "bench account password",
                                 config.plan, "bench", bcrypt_rounds=config.bcrypt_rounds)
    proc = procs.spawn("gateway", [sys.executable, "-m", "proxy", "serve", "--config", config_dir,
                                   "--port", str(port)], cpu=_core(pin, PROXY_CORE), cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    authorization = f"Bearer {key}"
    listening = control.wait_until(proc, control.answers(url + "/healthz"), timeout=60)
    startup = control.wait_until(proc, control.answers(url + "/v1/models", headers={"Authorization": authorization}),
                                 timeout=60)
    return Target("gateway", url, authorization, proc, upstreams, startup,
                  f"spawn → /healthz {listening:.2f} s → first 200 /v1/models with the key "
                  f"(its bcrypt check at cost {config.bcrypt_rounds} included)")


def start_litellm(procs: ProcessSet, workdir: str, *, pin: bool) -> Target:
    sys.path.insert(0, REPO)
    from tests import litellm_process as litellm

    if not litellm.available():
        raise RuntimeError(f"LiteLLM is not installed at {litellm.VENV}; run scripts/install-litellm")
    upstream, _, _ = start_fake(procs, "for-litellm", pin=pin)
    config_path = os.path.join(workdir, "litellm.yaml")
    litellm.write_config(config_path, upstream_base=upstream + "/v1")
    port = free_port()
    proc = procs.spawn("litellm", [litellm.EXECUTABLE, "--config", config_path, "--host", "127.0.0.1",
                                   "--port", str(port), "--num_workers", "1"],
                       cpu=_core(pin, PROXY_CORE), env={**os.environ, **litellm.OFFLINE_ENV}, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    authorization = f"Bearer {litellm.MASTER_KEY}"
    live = control.wait_until(proc, control.answers(url + "/health/liveliness"), timeout=180, interval=0.02)
    startup = control.wait_until(proc, control.answers(url + "/v1/chat/completions", body=CHAT_BODY,
                                                       headers={"Authorization": authorization}), timeout=60)
    return Target("litellm", url, authorization, proc, [upstream], startup,
                  f"spawn → /health/liveliness {live:.2f} s → first 200 chat")
