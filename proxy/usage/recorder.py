"""Usage rows leave the hot path through a queue and reach SQLite in batches.

`record()` is synchronous and O(1): it appends to a deque and, at most, sets an
event. One background task takes the rows in arrival order and writes each
batch (raw rows plus rollups) in ONE transaction, when `flush_rows` rows are
waiting or `flush_interval` has passed since the oldest one arrived, so a hard
kill loses at most one interval.

Nothing is ever dropped:
- A batch that fails to write stays at the head of the queue and is retried
  with exponential backoff (50 ms doubling to 5 s); rows keep queueing behind it.
- Unless the failure comes from a row itself (a NOT NULL value missing, a type
  SQLite cannot store): retrying could never succeed and would block every row
  behind it, so the batch is written again without the rows the database
  refuses, and those are appended to a `.usage-rejected.jsonl` file beside the
  database and logged, for a person to look at.
- `queue_size` is a soft bound. Past it, `record()` still accepts the row (the
  alternative is losing billing data or blocking the request path), logs a
  warning once per crossing, and `saturated` turns true so the gateway can shed
  load or report unhealthy; `queue_depth` is exported as a metric.
- On shutdown every queued row is written before the database closes. If the
  database keeps failing for `drain_timeout` seconds, the rows still queued are
  appended to a JSON-lines spill file beside the database, which the next start
  loads and writes first.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Awaitable, Callable

import orjson
from aiohttp import web

from ..appkeys import CONFIG, STORE
from ..config.snapshot import DatabaseSettings
from ..store import Database
from .record import COLUMNS, UsageRecord
from .rollup import DATA_ERRORS, write_batch, write_batch_salvaging

log = logging.getLogger("bluesminds.usage")

# A backlog drains in batches of at most this many rows (about 50 ms of work),
# so one transaction never holds the writer, and the key and session writes
# queued behind it, for long.
MAX_BATCH_ROWS = 2_000
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 5.0

Sleep = Callable[[float], Awaitable[None]]


class UsageRecorder:
    def __init__(
        self,
        db: Database,
        *,
        settings: Callable[[], DatabaseSettings] = DatabaseSettings,
        spill_path: str | None = None,
        rejected_path: str | None = None,
        drain_timeout: float = 10.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        # `settings` is read on every cycle, so a config reload that changes the
        # flush interval or batch size applies without a restart.
        self._db = db
        self._settings = settings
        self._spill_path = spill_path
        self._rejected_path = rejected_path
        self._drain_timeout = drain_timeout
        self._sleep = sleep
        self._pending: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = False
        self._spilled_rows = 0  # rows at the queue head that came from the spill file
        self._over_soft_bound = False
        # Totals since start; flush() waits for `written` to reach `accepted`.
        self.accepted = 0
        self.written = 0
        self.batches = 0
        self.failed_batches = 0  # write attempts that failed
        self.rejected = 0  # rows the database refused, set aside in the rejected file
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # -- hot path ------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        if self._stopped:
            # A straggler after shutdown drained the queue: nothing will write it
            # to the database any more, so keep it in the spill file.
            self._spill([rec])
            return
        pending = self._pending
        pending.append(rec)
        self.accepted += 1
        depth = len(pending)
        if depth == 1:
            self._wake.set()
            return
        settings = self._settings()
        if depth >= settings.flush_rows:
            self._wake.set()
        if depth > settings.queue_size and not self._over_soft_bound:
            self._over_soft_bound = True
            log.warning(
                "usage queue holds %d rows, above database.queue_size=%d: the database "
                "is not keeping up; rows are kept, not dropped",
                depth, settings.queue_size,
            )

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def saturated(self) -> bool:
        return len(self._pending) > self._settings().queue_size

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self._load_spill()
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        """Write everything queued, then stop. Call before the database closes."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except Exception:
                log.exception("usage recorder failed; keeping its %d queued rows in %s",
                              len(self._pending), self._spill_path)
                self._spill(list(self._pending)[self._spilled_rows:])
                self._pending.clear()
        self._stopped = True

    async def flush(self) -> None:
        """Return once every row recorded before this call is in the database."""
        target = self.accepted
        if self.written >= target:
            return
        if self._task is None or self._task.done():
            raise RuntimeError("usage recorder is not running")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._wake.set()
        await waiter

    # -- background task -----------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF
        failing_since: float | None = None
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            settings = self._settings()
            filling = failing_since is None and not self._stopping and not self._waiters
            if filling and len(self._pending) < settings.flush_rows:
                # Let the batch fill for one interval; a full batch, flush() or
                # stop() cuts the wait short.
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), settings.flush_interval)
                except TimeoutError:
                    pass
            count = min(len(self._pending), max(settings.flush_rows, MAX_BATCH_ROWS))
            if self._spilled_rows:
                count = self._spilled_rows  # the spill file goes in alone, then is deleted
            batch = [self._pending[i] for i in range(count)]
            try:
                try:
                    await self._db.write(lambda conn: write_batch(conn, batch))
                except DATA_ERRORS as exc:
                    self.failed_batches += 1
                    refused = await self._db.write(lambda conn: write_batch_salvaging(conn, batch))
                    self._reject(refused, exc)
            except Exception as exc:  # noqa: BLE001 - any other failure means "try again later"
                self.failed_batches += 1
                now = loop.time()
                failing_since = now if failing_since is None else failing_since
                if self._stopping and now - failing_since >= self._drain_timeout:
                    log.error("usage rows could not be written during shutdown (%s); "
                              "%d rows saved to %s", exc, len(self._pending), self._spill_path)
                    # Rows loaded from the spill file are still in it.
                    self._spill(list(self._pending)[self._spilled_rows:])
                    self._pending.clear()
                    self._release_waiters(force=True)
                    return
                log.warning("usage batch of %d rows failed (%s); retrying in %.2fs",
                            count, exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff, failing_since = FIRST_BACKOFF, None
            for _ in range(count):
                self._pending.popleft()
            if self._spilled_rows:
                self._spilled_rows = 0
                self._remove_spill_file()
            self.written += count
            self.batches += 1
            if self._over_soft_bound and len(self._pending) <= settings.queue_size:
                self._over_soft_bound = False
                log.info("usage queue back under database.queue_size (%d rows)", len(self._pending))
            self._release_waiters()

    def _release_waiters(self, *, force: bool = False) -> None:
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, waiter in self._waiters:
            if force or self.written >= target:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((target, waiter))
        self._waiters = still

    # -- files beside the database ------------------------------------------

    def _spill(self, records) -> None:
        if not records:
            return
        if self._spill_path is None:
            log.error("%d usage rows lost: no spill file for an in-memory database", len(records))
            return
        _append_rows(self._spill_path, records)

    def _reject(self, refused: list[tuple[UsageRecord, str]], cause: Exception) -> None:
        self.rejected += len(refused)
        for rec, reason in refused:
            log.error("usage row %s refused by the database (%s); kept in %s",
                      rec.request_id, reason, self._rejected_path or "the log only")
        if self._rejected_path is None:
            for rec, _ in refused:
                log.error("refused usage row: %s", _row_json(rec).decode())
        elif refused:
            _append_rows(self._rejected_path, [rec for rec, _ in refused])
        if not refused:
            log.warning("usage batch failed (%s) but every row was accepted one by one", cause)

    def _load_spill(self) -> None:
        if self._spill_path is None or not os.path.exists(self._spill_path):
            return
        loaded: list[UsageRecord] = []
        with open(self._spill_path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    loaded.append(UsageRecord(**orjson.loads(line)))
                except (orjson.JSONDecodeError, TypeError) as exc:
                    log.error("%s line %d is not a usage row (%s); skipped",
                              self._spill_path, number, exc)
        self._pending.extendleft(reversed(loaded))
        self._spilled_rows = len(loaded)
        self.accepted += len(loaded)
        if not loaded:
            self._remove_spill_file()
        else:
            log.info("loaded %d unwritten usage rows from %s", len(loaded), self._spill_path)

    def _remove_spill_file(self) -> None:
        try:
            os.remove(self._spill_path)  # type: ignore[arg-type]
        except FileNotFoundError:
            pass


def _row_json(rec: UsageRecord) -> bytes:
    return orjson.dumps(dict(zip(COLUMNS, rec.as_row())), default=repr)


def _append_rows(path: str, records) -> None:
    with open(path, "ab") as f:
        for rec in records:
            f.write(_row_json(rec) + b"\n")
        f.flush()
        os.fsync(f.fileno())


from ..appkeys import USAGE  # noqa: E402  (every app key lives in appkeys)


def spill_path_for(db_path: str) -> str | None:
    return None if db_path == ":memory:" else db_path + ".usage-spill.jsonl"


def rejected_path_for(db_path: str) -> str | None:
    return None if db_path == ":memory:" else db_path + ".usage-rejected.jsonl"


def setup(app: web.Application) -> None:
    """Run a recorder under `USAGE` from after the store opens until just before it closes."""

    async def lifecycle(app: web.Application):
        holder = app[CONFIG]
        db = app[STORE]
        recorder = UsageRecorder(
            db,
            settings=lambda: holder.current.database,
            spill_path=spill_path_for(db.path),
            rejected_path=rejected_path_for(db.path),
        )
        app[USAGE] = recorder
        await recorder.start()
        yield
        await recorder.stop()

    app.cleanup_ctx.append(lifecycle)
