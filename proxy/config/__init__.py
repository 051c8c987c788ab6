"""YAML → JSON Schema check → frozen Snapshot; the holder swaps snapshots on reload."""

from .build import load_config
from .snapshot import Snapshot
from .source import ConfigError, ConfigProblem

__all__ = ["ConfigError", "ConfigProblem", "Snapshot", "load_config"]
