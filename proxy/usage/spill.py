"""JSON-lines files beside the database: the spill file and the rejected file.

Appends are checked: every write is looked at for how much it really wrote
(a full disk or a file size limit cuts a write short, or fails it), a cut
line is truncated away, and the file is fsynced before any row counts as
saved. `append_rows` returns how many rows are durably in the file, which is
what the caller may report; the rest are the caller's to keep.

Reading is forgiving: a line that is not a usage row (cut by a crash, or
edited by hand) is skipped and handed back raw, and every other row is kept.
"""

from __future__ import annotations

import hashlib
import os
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Sequence

import orjson

from ..capture.record import Captured
from .record import COLUMNS, UsageRecord


def row_json(rec: UsageRecord) -> bytes:
    value = dict(zip(COLUMNS, rec.as_row()))
    if rec.capture is not None:
        # Already redacted (proxy/capture/draft.py): nothing unredacted reaches this file.
        value["capture"] = rec.capture.as_json()
    return orjson.dumps(value, default=repr)


def append_rows(path: str, records: Sequence[UsageRecord]) -> tuple[int, OSError | None]:
    """Append one line per record; return (rows durably written, the error that stopped the rest)."""
    lines = [row_json(rec) + b"\n" for rec in records]
    return append_lines(path, lines)


def append_lines(path: str, lines: Sequence[bytes]) -> tuple[int, OSError | None]:
    if not lines:
        return 0, None
    created = not os.path.exists(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        return 0, exc
    try:
        return _append(fd, path, lines, created)
    finally:
        os.close(fd)


def _append(fd: int, path: str, lines: Sequence[bytes], created: bool) -> tuple[int, OSError | None]:
    start = os.fstat(fd).st_size
    # A writer cut off mid-line left no newline: start on a fresh line, or
    # that tail would swallow the first row written now.
    lead = b"\n" if start > 0 and os.pread(fd, 1, start - 1) != b"\n" else b""
    ends, total = [], len(lead)
    for line in lines:
        total += len(line)
        ends.append(total)
    data = memoryview(lead + b"".join(lines))
    done, error = 0, None
    while done < len(data):
        try:
            n = os.write(fd, data[done:])
        except OSError as exc:
            error = exc
            break
        if n == 0:
            error = OSError(28, "short write")
            break
        done += n
    rows = bisect_right(ends, done)
    if error is not None:
        keep = start + (ends[rows - 1] if rows else 0)
        try:
            os.ftruncate(fd, keep)  # never leave a cut row at the end
        except OSError:
            pass  # the reader skips a cut line; the count below stays exact
    try:
        os.fsync(fd)
    except OSError as exc:
        # Nothing written by this call is known to be on disk.
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        return 0, error or exc  # the write's error says more than the fsync's
    if created:
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return rows, error


def _fsync_dir(directory: str) -> None:
    # So that the new file's name survives a power cut, not only its bytes.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


@dataclass
class SpillContents:
    rows: list[UsageRecord] = field(default_factory=list)
    bad_lines: list[tuple[int, bytes, str]] = field(default_factory=list)  # (line number, raw, why)
    digest: str = ""  # of the whole file: names this exact content for an idempotent import


def read_rows(path: str) -> SpillContents:
    with open(path, "rb") as f:
        data = f.read()
    contents = SpillContents(digest=hashlib.sha256(data).hexdigest())
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
            if not isinstance(value, dict):
                raise TypeError(f"a JSON {type(value).__name__}, not an object")
            if "cost_usd" in value:  # spilled before costs became integer nano-dollars
                value["cost_nano"] = round(value.pop("cost_usd") * 1e9)
            if "capture" in value:
                value["capture"] = Captured.from_json(value["capture"])
            contents.rows.append(UsageRecord(**value))
        except (orjson.JSONDecodeError, TypeError) as exc:
            contents.bad_lines.append((number, line, str(exc)))
    return contents

