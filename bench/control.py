"""Small blocking HTTP calls for readiness checks and the fake upstream's counters.

Only 127.0.0.1 is ever asked; every wait is bounded by a deadline.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Callable

from bench.procs import Spawned


def call(url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(proc: Spawned, probe: Callable[[], bool], *, timeout: float, interval: float = 0.005) -> float:
    """Seconds from the process's spawn until `probe()` first returns True."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            if probe():
                return time.monotonic() - proc.started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(interval)
    raise RuntimeError(f"{proc.name} was not ready after {timeout:.0f} s; see {proc.log_path}")


def answers(url: str, *, status: int = 200, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Callable[[], bool]:
    return lambda: call(url, body=body, headers=headers, timeout=2.0)[0] == status


def fake_stats(base_url: str) -> dict:
    status, raw = call(base_url + "/_fake/stats")
    if status != 200:
        raise RuntimeError(f"{base_url}/_fake/stats answered {status}")
    return json.loads(raw)


def wait_quiet(fake_urls: list[str], *, settle: float = 0.15, timeout: float = 5.0) -> int:
    """The fakes' summed request counter once it has stopped moving.

    A proxy that fell behind still forwards requests after the load generator
    has stopped; they belong to the run that sent them, not to the next one.
    """
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        stats = [fake_stats(u) for u in fake_urls]
        count = sum(s["requests"] for s in stats)
        now = time.monotonic()
        if count != last or any(s["in_flight"] for s in stats):
            last, since = count, now
        if now - since >= settle or now > deadline:
            return count
        time.sleep(0.01)
