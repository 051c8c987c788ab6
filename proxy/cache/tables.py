"""The cache's columns: a key's own cache setting, and a usage row's hit mark and the cost it saved.

Applied by the store: listed in proxy/store/migrations.py.
"""

from __future__ import annotations

import sqlite_utils

migrations = sqlite_utils.Migrations("bluesminds.cache")


@migrations(name="001_key_setting_and_hit_rows")
def _key_setting_and_hit_rows(db: sqlite_utils.Database) -> None:
    # NULL: the key follows its plan's default; 1 or 0: its owner turned the cache on or off.
    db.execute("ALTER TABLE api_keys ADD COLUMN cache INTEGER")
    # A hit's row has 0 upstream tokens and costs the plan's per-hit price; cost_saved_nano
    # is what the answer cost when it was first bought (integer nano-dollars, as cost_nano).
    db.execute("ALTER TABLE usage ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE usage ADD COLUMN cost_saved_nano INTEGER NOT NULL DEFAULT 0")
