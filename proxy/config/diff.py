"""What a reload changed: upstreams, models and plans added, removed or changed.

Logged for every applied reload and kept for `GET /api/admin/config`, so a
reload that silently dropped limits (a half-written plans file) is visible.
"""

from __future__ import annotations

from typing import Any, Mapping

from .snapshot import Snapshot

SECTIONS = ("upstreams", "models", "plans")


def _by_name(snapshot: Snapshot, section: str) -> Mapping[str, Any]:
    return snapshot.upstream_by_name if section == "upstreams" else getattr(snapshot, section)


def config_diff(old: Snapshot, new: Snapshot) -> dict[str, dict[str, list[str]]]:
    """{section: {"added": [...], "removed": [...], "changed": [...]}}, names sorted."""
    out: dict[str, dict[str, list[str]]] = {}
    for section in SECTIONS:
        before, after = _by_name(old, section), _by_name(new, section)
        out[section] = {
            "added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),
        }
    return out


def describe(diff: Mapping[str, Mapping[str, list[str]]]) -> str:
    """One log line: 'plans removed: pro; upstreams changed: a, b' (or 'no upstream, model or plan changed')."""
    parts = [f"{section} {kind}: {', '.join(names)}"
             for section, kinds in diff.items() for kind, names in kinds.items() if names]
    return "; ".join(parts) or "no upstream, model or plan changed"
