"""Who owns a response id, and which upstream holds it.

Response ids are never rewritten, so a follow-up (`GET`/`DELETE`/`cancel`/
`input_items`, or a new request with `previous_response_id`) names an object
that lives on exactly one upstream. For each response it relays the gateway
records `id → (account, key, upstream, model)`:

- `remember()` is on the hot path: O(1), no I/O. The entry goes into a bounded
  map of recent ids (so a follow-up that arrives before the write lands still
  finds it) and into a queue a background task writes in batches, in one
  transaction each, like usage rows.
- `find()` reads the map, then the `response_ids` table; rows older than the
  retention (OpenAI keeps stored responses 30 days) are pruned by the writer
  and never answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import sqlite_utils
from aiohttp import web

from ..appkeys import CLOCK, RESPONSE_IDS, STORE
from ..store import Store

log = logging.getLogger("bluesminds.responses")

RETENTION_S = 30 * 86400
RECENT_CAPACITY = 50_000  # ids kept in memory; older ones are read from the table
FLUSH_INTERVAL = 0.05
MAX_PENDING = 100_000  # past this, while the database fails, the oldest unwritten ids are dropped
PRUNE_EVERY_S = 3600.0

migrations = sqlite_utils.Migrations("bluesminds.responses")


@migrations()
def m001_response_ids(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE response_ids (
            id TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL,
            key_id INTEGER,
            upstream TEXT NOT NULL,
            model TEXT NOT NULL,
            created REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX response_ids_created ON response_ids (created)")


@dataclass(frozen=True, slots=True)
class ResponseOwner:
    user_id: int
    key_id: int | None
    upstream: str
    model: str  # the public model name it was made with
    created: float


class ResponseIds:
    def __init__(self, db: Store, *, clock: Callable[[], float], retention_s: float = RETENTION_S,
                 capacity: int = RECENT_CAPACITY, flush_interval: float = FLUSH_INTERVAL) -> None:
        self._db = db
        self._clock = clock
        self.retention_s = retention_s
        self._capacity = capacity
        self._flush_interval = flush_interval
        self._recent: OrderedDict[str, ResponseOwner] = OrderedDict()
        self._pending: list[tuple] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._last_prune = 0.0
        self.written = 0
        self.dropped = 0

    # -- hot path ----------------------------------------------------------

    def remember(self, response_id: str, owner: ResponseOwner) -> None:
        recent = self._recent
        recent[response_id] = owner
        recent.move_to_end(response_id)
        if len(recent) > self._capacity:
            recent.popitem(last=False)
        self._pending.append((response_id, owner.user_id, owner.key_id, owner.upstream, owner.model,
                              owner.created))
        self._wake.set()

    async def find(self, response_id: str) -> ResponseOwner | None:
        """The owner of `response_id` within the retention, or None."""
        oldest = self._clock() - self.retention_s
        owner = self._recent.get(response_id)
        if owner is None:
            row = await self._db.read(lambda conn: conn.execute(
                "SELECT user_id, key_id, upstream, model, created FROM response_ids WHERE id = ?",
                (response_id,)).fetchone())
            if row is None:
                return None
            owner = ResponseOwner(*row)
        return owner if owner.created >= oldest else None

    # -- the writer ----------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="response-ids")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        backoff = self._flush_interval
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._stopping:
                await asyncio.sleep(self._flush_interval)  # let a batch gather
            batch, self._pending = self._pending, []
            now = self._clock()
            prune = now - self._last_prune >= PRUNE_EVERY_S
            try:
                await self._db.write(lambda conn: self._write(conn, batch, now - self.retention_s if prune else None))
            except Exception as exc:  # noqa: BLE001 - the database's trouble: keep the ids, retry later
                self._pending[:0] = batch
                if len(self._pending) > MAX_PENDING:
                    excess = len(self._pending) - MAX_PENDING
                    del self._pending[:excess]
                    self.dropped += excess
                log.warning("writing %d response ids failed (%s); retrying in %.2fs", len(batch), exc, backoff)
                if self._stopping:
                    log.error("%d response ids not written at shutdown; follow-ups on them will answer 404",
                              len(self._pending))
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = self._flush_interval
            if prune:
                self._last_prune = now
            self.written += len(batch)

    @staticmethod
    def _write(conn, batch: list[tuple], prune_before: float | None) -> None:
        conn.executemany("INSERT INTO response_ids (id, user_id, key_id, upstream, model, created) "
                         "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                         "user_id = excluded.user_id, key_id = excluded.key_id, "
                         "upstream = excluded.upstream, model = excluded.model, created = excluded.created", batch)
        if prune_before is not None:
            conn.execute("DELETE FROM response_ids WHERE created < ?", (prune_before,))


def setup(app: web.Application) -> None:
    """Run the writer from after the store opens until just before it closes."""

    async def lifecycle(app: web.Application):
        ids = ResponseIds(app[STORE], clock=app[CLOCK])
        app[RESPONSE_IDS] = ids
        await ids.start()
        yield
        await ids.stop()

    app.cleanup_ctx.append(lifecycle)
