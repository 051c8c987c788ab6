"""LiteLLM's real proxy as a subprocess, answering by itself through `mock_response`.

It lives in its own virtual environment (`scripts/install-litellm`), so its
pinned packages never meet the gateway's. The offline switches keep it from
fetching cost maps and templates at start-up.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time

import aiohttp
import yaml

VENV = os.environ.get("BLUESMINDS_LITELLM_VENV", os.path.expanduser("~/.cache/bluesminds-litellm"))
EXECUTABLE = os.path.join(VENV, "bin", "litellm")
MASTER_KEY = "sk-bluesminds-test-master"
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
}


def available() -> bool:
    return os.access(EXECUTABLE, os.X_OK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: str, *, chat_reply: str = "Hello from LiteLLM", upstream_base: str | None = None) -> None:
    """A mock-answering config, or (with `upstream_base`) one forwarding to an OpenAI-compatible server."""
    def params(model: str, mock):
        p = {"model": f"openai/{model}", "api_key": "sk-unused"}
        if upstream_base:
            p["api_base"] = upstream_base
        else:
            p["mock_response"] = mock
        return p

    config = {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": params("gpt-4o-mini", chat_reply)},
            {"model_name": "text-embedding-3-small",
             "litellm_params": params("text-embedding-3-small", [0.25, 0.5, 0.75])},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh)


class LiteLLMProcess:
    def __init__(self, config_path: str, port: int | None = None, *, cpu: int | None = None) -> None:
        self.config_path = config_path
        self.port = port or free_port()
        self.cpu = cpu
        self.proc: subprocess.Popen | None = None
        self.log_path = config_path + ".log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [EXECUTABLE, "--config", self.config_path, "--host", "127.0.0.1", "--port", str(self.port),
               "--num_workers", "1"]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu)] + cmd
        env = {**os.environ, **OFFLINE_ENV}
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    async def wait_ready(self, timeout: float = 90.0) -> float:
        """Wait for the liveness route; returns seconds from start. A process readiness check has no event."""
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"LiteLLM exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    async with session.get(self.url + "/health/liveliness",
                                           timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        if resp.status == 200:
                            return time.monotonic() - started
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"LiteLLM did not become ready in {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        self.proc = None
