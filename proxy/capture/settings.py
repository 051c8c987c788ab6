"""The `capture:` config section as a frozen snapshot: which requests are
captured, how bodies are redacted, how long and how much is kept.

    capture:
      plans: [pro]                 # every request of these plans; keys opt in on their own
      retention_days: 7
      max_body_bytes: 64KiB        # per body (request, response); longer is truncated, marked
      max_total_bytes: 256MiB      # across all captures; the oldest are dropped first
      sweep_interval: 10m
      redact:
        - pattern: 'sk-[A-Za-z0-9]{20,}'          # every string of both bodies
        - path: '$.messages[*].content'          # only there …
          pattern: '\\b\\d{13,19}\\b'              # … the matching parts
          replacement: '[CARD]'
        - path: '$.user'                         # the whole value
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from ..config.units import parse_duration, parse_size
from . import jsonpath

DEFAULT_REPLACEMENT = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class RedactRule:
    pattern: re.Pattern[str] | None = None
    path: tuple[jsonpath.Step, ...] | None = None  # None: every string of both bodies
    path_text: str | None = None
    replacement: str = DEFAULT_REPLACEMENT


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    plans: frozenset[str] = frozenset()
    retention_days: float = 7.0
    max_body_bytes: int = 64 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    sweep_interval: float = 600.0
    redact: tuple[RedactRule, ...] = ()

    def captures(self, plan: str, key_capture: bool) -> bool:
        return key_capture or plan in self.plans


Problem = Callable[[tuple, str, Any], None]


def build_capture(raw: dict[str, Any], problem: Problem, plan_names: frozenset[str]) -> CaptureSettings:
    """The section's snapshot; what the schema cannot check (regexes, paths,
    plan names) is reported through `problem(path, message, value)`."""
    plans = frozenset(raw.get("plans") or ())
    for i, name in enumerate(raw.get("plans") or ()):
        if name not in plan_names:
            problem(("capture", "plans", i), f"plan '{name}' is not defined in plans "
                    f"(defined: {', '.join(sorted(plan_names))})", name)
    rules = []
    for i, rule in enumerate(raw.get("redact") or ()):
        where = ("capture", "redact", i)
        pattern = steps = None
        if "pattern" in rule:
            try:
                pattern = re.compile(rule["pattern"])
            except re.error as exc:
                problem(where + ("pattern",), f"not a valid regular expression: {exc}", rule["pattern"])
        if "path" in rule:
            try:
                steps = jsonpath.parse(rule["path"])
            except jsonpath.BadPath as exc:
                problem(where + ("path",), f"not a JSON path this gateway reads: {exc}", rule["path"])
        rules.append(RedactRule(pattern=pattern, path=steps, path_text=rule.get("path"),
                                replacement=rule.get("replacement", DEFAULT_REPLACEMENT)))
    defaults = CaptureSettings()
    return CaptureSettings(
        plans=plans,
        retention_days=float(raw.get("retention_days", defaults.retention_days)),
        max_body_bytes=parse_size(raw.get("max_body_bytes", defaults.max_body_bytes)),
        max_total_bytes=parse_size(raw.get("max_total_bytes", defaults.max_total_bytes)),
        sweep_interval=parse_duration(raw.get("sweep_interval", defaults.sweep_interval)),
        redact=tuple(rules),
    )
