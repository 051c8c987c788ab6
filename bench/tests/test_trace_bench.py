"""The trace benchmark's own run, small, in a fresh interpreter: it starts its gateway from
the product's pieces and the bench config, never from the test suite's harness."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: pip install '.[otel]'")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_trace_bench_runs_without_importing_the_tests(tmp_path):
    script = os.path.join(REPO, "bench", "trace_bench.py")
    probe = ("import runpy, sys\n"
             "sys.argv = ['trace_bench.py', '--requests', '20', '--rounds', '1']\n"
             f"runpy.run_path({script!r}, run_name='__main__')\n"
             "leaked = sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.'))\n"
             "print('imported from tests:', leaked)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "python " + sys.version.split()[0] + ", 1 rounds × 20 sequential requests per mode"
    assert [line.split()[0] for line in lines[1:3]] == ["chat", "stream"]
    assert all("traces off p50" in line and "cost p50" in line for line in lines[1:3])
    assert lines[3] == "imported from tests: []"
