"""`bluesminds demo` answers at once, and the curl line and Python snippet it prints work as printed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
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


def test_demo_prints_a_key_a_curl_line_and_a_snippet_that_work(tmp_path):
    config = _demo_config(tmp_path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "demo", "--config", str(config), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the banner is the readiness signal
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        output = "".join(lines)
        assert "Press Ctrl+C" in output, output
        assert re.search(r"Demo key \(shown once\): bm-\S+", output)

        curl = next(line for line in lines if line.startswith("curl "))
        answer = subprocess.run(shlex.split(curl) + ["-s"], capture_output=True, text=True, timeout=20)
        reply = json.loads(answer.stdout)
        assert reply["object"] == "chat.completion"
        assert reply["choices"][0]["message"]["content"].startswith("demo-")

        snippet = next(line for line in lines if line.startswith("python -c "))
        result = subprocess.run(shlex.split(snippet.replace("python", sys.executable, 1)), capture_output=True,
                                text=True, timeout=30, env={**os.environ})
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("demo-")
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0
