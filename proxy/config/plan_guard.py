"""Refuse a reload that removes a plan accounts are on.

A half-written or mistaken plans file that drops a plan would otherwise leave
its accounts on a name the gateway no longer knows, which is to say without
limits. Only the running app can tell (it holds the accounts table), so this
is a reload check, not part of `check-config`.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, AsyncIterator

from aiohttp import web

from ..appkeys import CONFIG, STORE
from ..store.errors import OperationalError
from .snapshot import Snapshot
from .source import ConfigProblem

if TYPE_CHECKING:
    from ..store import Database


def _accounts_per_plan(conn: sqlite3.Connection) -> dict[str, int]:
    try:
        return dict(conn.execute("SELECT plan, COUNT(*) FROM users GROUP BY plan").fetchall())
    except OperationalError:  # no accounts table: nobody is on any plan
        return {}


class PlansInUse:
    def __init__(self, store: "Database", config_path: str) -> None:
        self._store = store
        self._config_path = config_path

    async def __call__(self, current: Snapshot, candidate: Snapshot) -> list[ConfigProblem]:
        removed = current.plans.keys() - candidate.plans.keys()
        if not removed:
            return []  # the usual reload reads nothing
        counts = await self._store.read(_accounts_per_plan)
        return [
            ConfigProblem(f"plan '{name}' was removed, but {counts[name]} account(s) are on it; "
                          "move them to another plan first, or keep the plan",
                          file=self._config_path, path=("plans", name))
            for name in sorted(removed) if counts.get(name)
        ]


def setup(app: web.Application) -> None:
    """Register after the store's own setup: the check reads the accounts table."""
    app.cleanup_ctx.append(_guard_ctx)


async def _guard_ctx(app: web.Application) -> AsyncIterator[None]:
    holder = app[CONFIG]
    check = PlansInUse(app[STORE], holder.path)
    holder.add_check(check)
    yield
    holder.remove_check(check)
