"""`serve --workers N`: N gateway processes on one port, and the parent that keeps them.

Each worker is `bluesminds serve --worker`, the same app as a single process
(its own config watcher, health state, usage recorder), bound with
SO_REUSEPORT so the kernel spreads new connections among them. The parent
holds no app and serves nothing:

- it reserves the port first (a bound, never listening SO_REUSEPORT socket),
  so port 0 gives every worker the same free port and nothing else takes it
  between two restarts;
- a worker that exits while the parent is not stopping is started again, at
  once the first time and with a doubling pause (up to MAX_BACKOFF_S) while
  workers keep dying within UNSTABLE_S of their start;
- SIGTERM or SIGINT is passed on to every worker, each drains (stops
  accepting, finishes what is in flight, flushes its usage rows) and the
  parent exits when all have, killing what is left after `drain_timeout`.

SQLite across workers: every worker has one writer connection and writes in
`BEGIN IMMEDIATE` with a 30 s busy_timeout (proxy/store/database.py), so
writers of different processes queue on SQLite's lock instead of failing;
WAL lets readers run beside them. The parent migrates the file once before
any worker starts.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("bluesminds.supervisor")

UNSTABLE_S = 5.0
MAX_BACKOFF_S = 5.0


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    history: list[int] = field(default_factory=list)  # pids, oldest first


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) with SO_REUSEPORT: the workers can bind beside it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    def __init__(self, worker_argv: list[str], workers: int, *, env: dict[str, str] | None = None,
                 drain_timeout: float = 120.0) -> None:
        self._argv = worker_argv
        self._env = env
        self._slots = [_Slot(i) for i in range(workers)]
        self._drain_timeout = drain_timeout
        self._stopping = False

    def run(self) -> int:
        """Start the workers and keep them until SIGTERM/SIGINT; returns the exit code."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
        try:
            for slot in self._slots:
                self._start(slot)
            while not self._stopping:
                self._reap()
                self._restart_due()
                # Woken by a signal (a worker exited, or stop); the timeout only
                # serves restarts that wait for their backoff.
                select.select([wake_r], [], [], self._next_timeout())
                _drain_pipe(wake_r)
            return self._stop_all()
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)

    def _on_stop(self, signum, frame) -> None:
        if not self._stopping:
            log.info("received %s: draining %d workers", signal.Signals(signum).name,
                     len(self._slots))
        self._stopping = True

    def _start(self, slot: _Slot) -> None:
        # The slot's index tells a restarted worker which claims were its predecessor's.
        env = {**(self._env if self._env is not None else os.environ), "BLUESMINDS_WORKER_INDEX": str(slot.index)}
        slot.proc = subprocess.Popen(self._argv, env=env)
        slot.started = time.monotonic()
        slot.restart_at = None
        slot.history.append(slot.proc.pid)
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            proc = slot.proc
            if proc is None or proc.poll() is None:
                continue
            slot.proc = None
            if self._stopping:
                continue
            quick = now - slot.started < UNSTABLE_S
            slot.backoff = min(MAX_BACKOFF_S, slot.backoff * 2 or 0.25) if quick else 0.0
            slot.restart_at = now + slot.backoff
            slot.restarts += 1
            log.error("worker %d (pid %d) exited with %s; restarting it%s", slot.index, proc.pid,
                      _describe(proc.returncode),
                      f" in {slot.backoff:g}s" if slot.backoff else "")

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.proc is None and slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _next_timeout(self) -> float | None:
        due = [s.restart_at for s in self._slots if s.proc is None and s.restart_at is not None]
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _stop_all(self) -> int:
        live = [s.proc for s in self._slots if s.proc is not None]
        for proc in live:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._drain_timeout
        for proc in live:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not drain within %gs; killing it", proc.pid,
                          self._drain_timeout)
                proc.kill()
                proc.wait()
        log.info("all workers stopped")
        return 0


def worker_argv(config_path: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "proxy", "serve", "--config", config_path, "--host", host,
            "--port", str(port), "--worker"]


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
