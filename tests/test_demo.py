"""`bluesminds demo` answers at once, and the curl line and Python snippet it prints work as printed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .litellm_process import free_port

ROOT = Path(__file__).resolve().parent.parent


def _demo_config(tmp_path: Path) -> Path:
    """The bundled config, moved to free ports so the test never collides with anything."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    upstreams = yaml.safe_load((config / "upstreams.yaml").read_text())
    for upstream in upstreams["upstreams"]:
        upstream["url"] = f"http://127.0.0.1:{free_port()}"
    (config / "upstreams.yaml").write_text(yaml.safe_dump(upstreams))
    return config


def _free_pair() -> int:
    """A port whose next port is free too: the bundled config has two fake upstreams."""
    for _ in range(100):
        first = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", first + 1))
        except OSError:
            continue
        return first
    raise AssertionError("no two free ports in a row")


def _run_demo(args: list[str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "demo", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the banner is the readiness signal
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl+C"):
            break
    return proc, lines


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(15)
    assert proc.returncode == 0


def _curl_answers(lines: list[str]) -> None:
    curl = next(line for line in lines if line.startswith("curl "))
    answer = subprocess.run(shlex.split(curl) + ["-s"], capture_output=True, text=True, timeout=20)
    reply = json.loads(answer.stdout)
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"].startswith("demo-")


def test_demo_prints_a_key_a_curl_line_and_a_snippet_that_work(tmp_path):
    config = _demo_config(tmp_path)
    port = free_port()
    proc, lines = _run_demo(["--config", str(config), "--port", str(port)])
    try:
        output = "".join(lines)
        assert "Press Ctrl+C" in output, output
        assert re.search(r"Demo key \(shown once\): bm-\S+", output)
        _curl_answers(lines)

        snippet = next(line for line in lines if line.startswith("python -c "))
        result = subprocess.run(shlex.split(snippet.replace("python", sys.executable, 1)), capture_output=True,
                                text=True, timeout=30, env={**os.environ})
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("demo-")
    finally:
        _stop(proc)


def test_demo_on_its_bundled_config_answers_and_lets_you_sign_up(tmp_path):
    port, upstream_port = free_port(), _free_pair()
    # From a folder with no config/ in it: the bundled config comes from the package.
    proc, lines = _run_demo(["--port", str(port), "--upstream-port", str(upstream_port)])
    try:
        output = "".join(lines)
        assert "Press Ctrl+C" in output, output
        assert "(fake upstreams: demo-a, demo-b)" in output
        _curl_answers(lines)
        signup = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/api/auth/signup",
             "-H", "Content-Type: application/json",
             "-d", json.dumps({"email": "visitor@example.com", "password": "a long enough password"})],
            capture_output=True, text=True, timeout=20)
        assert signup.stdout == "202"  # accepted: the same answer whether or not the address exists
    finally:
        _stop(proc)
