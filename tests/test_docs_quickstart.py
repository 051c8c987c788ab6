"""docs/quickstart.md: every command in it runs, as written, and does what the guide says.

The shell blocks are read from the guide itself, so guide and test cannot drift.
Only the ports change (4000 and 8080 become free ones) so the test never collides
with anything, and `bluesminds` is this tree's `python -m proxy`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import litellm_process
from .docs_blocks import blocks, commands
from .litellm_process import free_port
from .test_demo import _free_pair, _stop

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "quickstart.md"


def _section(prefix: str):
    return [b for b in blocks(GUIDE) if b.section.startswith(prefix)]


@pytest.fixture
def shell(tmp_path):
    """A working directory and environment in which the guide's lines run one by one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "bluesminds"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m proxy \"$@\"\n")
    shim.chmod(0o755)
    path = [str(bin_dir), os.path.join(litellm_process.VENV, "bin"), os.environ["PATH"]]
    env = {**os.environ, **litellm_process.OFFLINE_ENV, "PATH": os.pathsep.join(path)}
    env.pop("LITELLM_MASTER_KEY", None)
    session = _Shell(tmp_path / "work", env)
    yield session
    session.stop()


class _Shell:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        cwd.mkdir()
        self.cwd, self.env = cwd, env
        self.ports = {"4000": str(free_port()), "8080": str(free_port())}
        self.background: list[subprocess.Popen] = []

    def ported(self, text: str) -> str:
        for doc_port, port in self.ports.items():
            text = text.replace(f":{doc_port}", f":{port}").replace(f"--port {doc_port}", f"--port {port}")
        return text

    def run(self, command: str) -> str:
        command = self.ported(command)
        if command.startswith("export "):
            name = command[len("export "):].split("=", 1)[0]
            value = self._bash(f"{command}\nprintf %s \"${name}\"")
            self.env[name] = value
            return value
        if command.endswith(" &"):
            log = open(self.cwd / f"background-{len(self.background)}.log", "wb")
            self.background.append(subprocess.Popen(["bash", "-c", "exec " + command[:-2]], cwd=self.cwd,
                                                    env=self.env, stdout=log, stderr=subprocess.STDOUT))
            return ""
        return self._bash(command)

    def _bash(self, script: str) -> str:
        result = subprocess.run(["bash", "-ec", script], cwd=self.cwd, env=self.env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def wait_http(self, url: str, accept: tuple[int, ...], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a process's readiness has no event to await
            for proc in self.background:
                assert proc.poll() is None, f"a background command exited with {proc.returncode}"
            code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                                  capture_output=True, text=True, timeout=10).stdout
            if code.isdigit() and int(code) in accept:
                return
            time.sleep(0.2)
        raise AssertionError(f"{url} did not answer {accept} within {timeout}s")

    def stop(self) -> None:
        for proc in reversed(self.background):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_step_1_the_demo_answers_its_printed_curl_line(shell):
    [block] = _section("1.")
    [command] = commands(block)
    assert command == "bluesminds demo"
    # The demo runs until Ctrl+C; its own ports are moved off 8080 and 8091.
    args = shlex.split(command)[1:] + ["--port", str(free_port()), "--upstream-port", str(_free_pair())]
    proc = subprocess.Popen([sys.executable, "-m", "proxy", *args], cwd=shell.cwd, env=shell.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        curl = next(line for line in lines if line.startswith("curl "))
        answer = subprocess.run(shlex.split(curl) + ["-s"], capture_output=True, text=True, timeout=20)
        assert json.loads(answer.stdout)["object"] == "chat.completion"
    finally:
        _stop(proc)


@pytest.mark.skipif(not litellm_process.available(),
                    reason=f"LiteLLM is not installed at {litellm_process.EXECUTABLE}; run scripts/install-litellm")
def test_steps_2_and_3_litellm_a_tenant_a_key_and_an_openai_sdk_request(shell):
    litellm_blocks = _section("2.")
    assert [b.lang for b in litellm_blocks] == ["sh", "sh"]
    for command in commands(litellm_blocks[0]):
        shell.run(command)
        if command.startswith("litellm "):
            shell.wait_http(f"http://127.0.0.1:{shell.ports['4000']}/health/liveliness", (200,))
    for command in commands(litellm_blocks[1]):
        output = shell.run(command)
        if command.startswith("bluesminds check-config"):
            assert output.startswith("gateway-config: OK (1 upstreams, 1 models, 1 plans")
        if command.startswith("bluesminds serve"):
            shell.wait_http(f"http://127.0.0.1:{shell.ports['8080']}/v1/models", (401,))

    tenant, request = _section("3.")
    assert (tenant.lang, request.lang) == ("sh", "python")
    for command in commands(tenant):
        shell.run(command)
    assert shell.env["BLUESMINDS_KEY"].startswith("bm-")
    result = subprocess.run([sys.executable, "-c", shell.ported(request.text)], cwd=shell.cwd, env=shell.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from LiteLLM\n"
    # The guide's closing claim: the request is in `bluesminds usage` once its batch is written (250 ms).
    deadline = time.monotonic() + 15
    while True:
        rows = json.loads(shell.run("bluesminds usage --config gateway-config --json"))["data"]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(r["model"], r["requests_month"]) for r in rows] == [("gpt-4o-mini", 1)], rows
