"""Processes the bench starts: pinned to a core, logged to a file, and always
stopped by their own PID, also when the run is interrupted.

CPU time and RSS are read from /proc for the process and its descendants, so
a server that forks workers is measured whole.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import time
from typing import Mapping, Sequence

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A runner killed hard (SIGKILL) cannot run its finally blocks; the kernel
    # then sends SIGTERM to everything it started.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def can_pin() -> bool:
    """taskset exists and both cores 0 and 1 are ours."""
    return shutil.which("taskset") is not None and {0, 1} <= os.sched_getaffinity(0)


class Spawned:
    """One started process: `pid`, `started` (monotonic), and `stop()`."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: str, cpu: int | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self.name = name
        self.log_path = log_path
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]  # taskset execs argv: same PID
        self._log = open(log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(list(argv), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=dict(env) if env else None, cwd=cwd,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                               + tail(self.log_path))

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class ProcessSet:
    """Everything one run started; `with` stops them all, newest first."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.started: list[Spawned] = []

    def spawn(self, name: str, argv: Sequence[str], **kwargs) -> Spawned:
        proc = Spawned(name, argv, log_path=os.path.join(self.log_dir, f"{name}.log"), **kwargs)
        self.started.append(proc)
        return proc

    def stop(self, proc: Spawned) -> None:
        proc.stop()
        self.started.remove(proc)

    def __enter__(self) -> "ProcessSet":
        return self

    def __exit__(self, *exc) -> None:
        while self.started:
            self.started.pop().stop()


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            return b"\n".join(fh.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""


# -- /proc readings ----------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """pid and every process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as fh:
                    queue.extend(int(c) for c in fh.read().split())
            except OSError:
                pass
    return found


def parse_stat_cpu_ticks(stat_line: str) -> int:
    """utime + stime from a /proc/<pid>/stat line (the command may hold spaces and parens)."""
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def parse_status_rss_kib(status_text: str) -> int:
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    ticks = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                ticks += parse_stat_cpu_ticks(fh.read())
        except OSError:
            pass
    return ticks / CLOCK_TICKS


def parse_proc_stat_busy_ticks(text: str) -> int:
    """All CPUs' non-idle ticks from /proc/stat's first line."""
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user and nice]
    return sum(fields[:8]) - fields[3] - fields[4]


def machine_busy_seconds() -> float:
    with open("/proc/stat") as fh:
        return parse_proc_stat_busy_ticks(fh.read()) / CLOCK_TICKS


def own_cpu_seconds(procs: "ProcessSet") -> float:
    """CPU used by this runner, the children it has waited for (wrk), and every process it started."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    return total + sum(cpu_seconds(p.pid) for p in procs.started)


def rss_bytes(pid: int) -> int:
    kib = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                kib += parse_status_rss_kib(fh.read())
        except OSError:
            pass
    return kib * 1024
