"""Where the gateway's CPU goes under load: py-spy samples, summed per function.

py-spy's raw output has one line per distinct stack, "frame;frame;… count",
each frame "function (file:line)". Lines are dropped so that a function is
one entry however many lines of it were sampled.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.split("/main/", 1)[-1]
    return f"{match.group('func')} ({path})"


def _module(short_frame: str) -> str:
    """"func (path)" -> "path"."""
    return short_frame.rsplit(" (", 1)[-1].rstrip(")") if short_frame.endswith(")") else short_frame


def summarize(raw: str, top: int = 15) -> str:
    self_time: Counter[str] = Counter()
    by_module: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        if frames and frames[0].startswith("process ") or frames and frames[0].startswith("thread "):
            frames = frames[1:]  # py-spy's process/thread pseudo-frames
        if not frames:
            continue
        self_time[frames[-1]] += n
        by_module[_module(frames[-1])] += n
        for name in set(frames):
            inclusive[name] += n
    if not total:
        return "py-spy recorded no samples"
    lines = [f"{total} samples; self = time in the function itself, total = with everything it called; "
             "self time in Runner.run is uvloop's C code (the loop, socket reads and writes)", "",
             f"top {top} by self time:"]
    lines += [f"{n / total:6.1%}  {name}" for name, n in self_time.most_common(top)]
    lines += ["", f"top {top} files by self time:"]
    lines += [f"{n / total:6.1%}  {name}" for name, n in by_module.most_common(top)]
    lines += ["", f"top {top} by total time (entry points and event-loop plumbing left out):"]
    skip = ("_run_once", "run_forever", "_run (asyncio/events.py)", "run (asyncio/runners.py)", "<module>",
            "run_until_complete", "_run_module_as_main", "_run_code", "main (", "serve (", "invoke (",
            "__call__ (click", "run (proxy/cli.py)", "run (uvloop")
    shown = [(name, n) for name, n in inclusive.most_common() if not any(s in name for s in skip)]
    lines += [f"{n / total:6.1%}  {name}" for name, n in shown[:top]]
    return "\n".join(lines)


def available() -> bool:
    return shutil.which("py-spy") is not None


def start(pid: int, seconds: int, out_path: str, *, cpu: int | None) -> subprocess.Popen:
    argv = ["py-spy", "record", "--nonblocking", "-r", "250", "-f", "raw", "-o", out_path,
            "-d", str(seconds), "--pid", str(pid)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, out_path: str, timeout: float) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    if proc.returncode != 0 or not os.path.exists(out_path):
        return f"py-spy failed ({proc.returncode}): {output.decode('utf-8', 'replace')[-500:]}"
    with open(out_path, encoding="utf-8", errors="replace") as fh:
        return summarize(fh.read())
