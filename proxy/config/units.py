"""Durations (`250ms`, `10s`, `6m`, `1h30m`, `7d`) and sizes (`4MiB`) as written in YAML."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$")
_BYTES = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
          "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}

# Same patterns the JSON Schemas use, so a value the schema accepts always parses.
DURATION_PATTERN = _DURATION.pattern
SIZE_PATTERN = _SIZE.pattern


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number (already seconds) or a duration string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not _DURATION.match(value):
        raise ValueError(f"{value!r} is not a duration like '250ms', '10s' or '1h30m'")
    return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


def parse_size(value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a size like '4MiB' or '512KB'")
    return int(float(match.group(1)) * _BYTES[match.group(2)])


def format_duration(seconds: float) -> str:
    """Go-style duration, as OpenAI's x-ratelimit-reset-* headers use: 12ms, 1s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    total = int(round(seconds)) if seconds >= 60 else None
    if total is None:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s"
