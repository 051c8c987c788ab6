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
  database keeps failing for `drain_timeout` seconds (or refuses writes because
  its file was deleted, which no wait can mend), the rows still queued are
  appended to a JSON-lines spill file beside the database, which the next start
  loads and writes first, in one transaction keyed by the file's content, so a
  crash between that commit and the file's removal cannot write it twice.
- The spill is checked (see spill.py): the count logged as saved is the count
  fsynced. Rows that even the spill cannot take (a full disk) stay in memory,
  counted by `unsaved_rows`, and are logged at ERROR one JSON line each, the
  last copy there is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Awaitable, Callable

from aiohttp import web

from ..appkeys import CONFIG, STORE, USAGE
from ..config.snapshot import DatabaseSettings
from ..errors import StoreUnavailable
from ..store import Store
from .record import UsageRecord
from .rollup import DATA_ERRORS, write_batch, write_batch_salvaging
from .spill import append_lines, append_rows, read_rows, row_json

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
        db: Store,
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
        self._spill_key: str | None = None  # idempotency key of their import
        self._spill_bad: list[bytes] = []  # lines of that file that were not rows
        self._unsaved: list[UsageRecord] = []  # neither the database nor the spill took these
        self._over_soft_bound = False
        # Totals since start; flush() waits for `written` to reach `accepted`.
        self.accepted = 0
        self.written = 0
        self.batches = 0
        self.failed_batches = 0  # write attempts that failed
        self.rejected = 0  # rows the database refused, set aside in the rejected file
        self.spilled = 0  # rows this process saved to the spill file
        self.spill_failures = 0  # spill writes that could not save every row
        self.spill_lines_skipped = 0  # lines of the loaded spill file that were not rows
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Run inside each batch's transaction as hook(conn, rows, notes), after the
        # rows and rollups are written (webhook thresholds read the rollups there).
        self.batch_hooks: list[Callable[[object, list[UsageRecord], list[object]], None]] = []
        self._notes: list[object] = []  # facts from the hot path for the next batch's hooks

    # -- hot path ------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        if self._stopped:
            # A straggler after shutdown drained the queue: nothing will write it
            # to the database any more, so keep it in the spill file.
            if not self._spill([rec]):
                self._report_unsaved([rec])
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

    def note(self, item: object) -> None:
        """Hand the next batch's hooks a fact learnt on the hot path, without a write there."""
        self._notes.append(item)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def saturated(self) -> bool:
        return len(self._pending) > self._settings().queue_size

    @property
    def unsaved_rows(self) -> int:
        """Rows held only in this process's memory (and the log): the disk took none of them."""
        return len(self._unsaved)

    @property
    def store_problem(self) -> str | None:
        return getattr(self._db, "problem", None)

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
                log.exception("usage recorder failed with %d rows queued", len(self._pending))
                self._spill_queue("the recorder failed")
        self._report_unsaved(self._unsaved)
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
        # When the last batch was taken: every row queued since arrived after it, so a
        # batch due one interval after that is never later than one interval after the
        # oldest of them arrived, however long the last write took.
        taken_at: float | None = None
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                taken_at = None  # the row that woke us has just arrived
                continue
            settings = self._settings()
            filling = failing_since is None and not self._stopping and not self._waiters
            if filling and len(self._pending) < settings.flush_rows:
                # Let the batch fill for the rest of the interval; a full batch,
                # flush() or stop() cuts the wait short.
                wait = settings.flush_interval
                if taken_at is not None:
                    wait -= loop.time() - taken_at
                if wait > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), wait)
                    except TimeoutError:
                        pass
            taken_at = loop.time()
            count = min(len(self._pending), max(settings.flush_rows, MAX_BATCH_ROWS))
            if self._spilled_rows:
                count = self._spilled_rows  # the spill file goes in alone, then is deleted
            batch = [self._pending[i] for i in range(count)]
            key = self._spill_key if self._spilled_rows else None
            try:
                await self._commit(batch, key)
            except Exception as exc:  # noqa: BLE001 - any other failure means "try again later"
                self.failed_batches += 1
                now = loop.time()
                failing_since = now if failing_since is None else failing_since
                # A deleted database file does not come back by waiting.
                hopeless = isinstance(exc, StoreUnavailable)
                if self._stopping and (hopeless or now - failing_since >= self._drain_timeout):
                    self._spill_queue(f"the database failed during shutdown ({exc})")
                    self._release_waiters(force=True)
                    return
                log.log(logging.ERROR if hopeless else logging.WARNING,
                        "usage batch of %d rows failed (%s); rows kept in memory, retrying in %.2fs",
                        count, self.store_problem or exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff, failing_since = FIRST_BACKOFF, None
            for _ in range(count):
                self._pending.popleft()
            if self._spilled_rows:
                self._spilled_rows = 0
                self._spill_key = None
                self._retire_spill_file()
            self.written += count
            self.batches += 1
            if self._over_soft_bound and len(self._pending) <= settings.queue_size:
                self._over_soft_bound = False
                log.info("usage queue back under database.queue_size (%d rows)", len(self._pending))
            self._release_waiters()

    async def _commit(self, batch: list[UsageRecord], key: str | None) -> None:
        """One transaction; with `key`, one that commits at most once ever."""
        refused: list[tuple[UsageRecord, str]] = []

        async def write(fn) -> None:
            if key is None:
                await self._db.write(fn)
            elif not await self._db.write_once(key, fn):
                log.warning("the spill file %s was already written before a restart; "
                            "its rows are not written again", self._spill_path)

        notes, self._notes = self._notes, []

        def rows(conn) -> None:
            write_batch(conn, batch)
            self._run_hooks(conn, batch, notes)

        def salvaged(conn) -> None:
            refused.extend(write_batch_salvaging(conn, batch))
            self._run_hooks(conn, batch, notes)

        try:
            try:
                await write(rows)
            except DATA_ERRORS as exc:
                self.failed_batches += 1
                await write(salvaged)
                self._reject(refused, exc)
        except BaseException:
            self._notes[:0] = notes  # they ride with the retry
            raise

    def _run_hooks(self, conn, batch: list[UsageRecord], notes: list[object]) -> None:
        """A hook's failure must never cost the usage rows: its writes are undone, the rows stay."""
        for hook in self.batch_hooks:
            conn.execute("SAVEPOINT usage_hook")
            try:
                hook(conn, batch, notes)
            except Exception:
                conn.execute("ROLLBACK TO usage_hook")
                log.exception("usage batch hook %r failed; the batch is written without it", hook)
            conn.execute("RELEASE usage_hook")

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

    def _spill_queue(self, why: str) -> None:
        """Move every queued row to the spill file (or, failing that, to `_unsaved`)."""
        rows = list(self._pending)[self._spilled_rows:]  # rows loaded from the file are still in it
        self._pending.clear()
        self._spilled_rows = 0
        saved = self._spill(rows)
        if rows:
            log.error("%s: %d usage rows queued; %d saved to %s, %d not saved",
                      why, len(rows), saved, self._spill_path, len(rows) - saved)

    def _spill(self, records: list[UsageRecord]) -> int:
        """Append to the spill file; return how many rows it durably holds now.
        The others are kept in `_unsaved`."""
        if not records:
            return 0
        if self._spill_path is None:
            saved, error = 0, "no spill file for an in-memory database"
        else:
            saved, error = append_rows(self._spill_path, records)
        self.spilled += saved
        if saved < len(records):
            self.spill_failures += 1
            self._unsaved.extend(records[saved:])
            log.error("usage spill to %s saved %d of %d rows (%s); the other %d are kept in "
                      "memory only", self._spill_path, saved, len(records), error,
                      len(records) - saved)
        return saved

    def _report_unsaved(self, rows: list[UsageRecord]) -> None:
        """Last resort for rows no file could take: the log, which often lives on
        another disk (journald, a terminal). Each line is a row, ready to re-import."""
        if not rows:
            return
        log.error("%d usage rows could not be saved to the database or the spill file %s; "
                  "they are lost when this process exits. Each follows as an "
                  "'unsaved usage row:' line", len(rows), self._spill_path)
        for rec in rows:
            log.error("unsaved usage row: %s", row_json(rec).decode())

    def _reject(self, refused: list[tuple[UsageRecord, str]], cause: Exception) -> None:
        self.rejected += len(refused)
        for rec, reason in refused:
            log.error("usage row %s refused by the database (%s); kept in %s",
                      rec.request_id, reason, self._rejected_path or "the log only")
        kept = 0
        if self._rejected_path is not None and refused:
            kept, error = append_rows(self._rejected_path, [rec for rec, _ in refused])
            if kept < len(refused):
                log.error("could not append to %s (%s)", self._rejected_path, error)
        for rec, _ in refused[kept:]:
            log.error("refused usage row: %s", row_json(rec).decode())
        if not refused:
            log.warning("usage batch failed (%s) but every row was accepted one by one", cause)

    def _load_spill(self) -> None:
        if self._spill_path is None or not os.path.exists(self._spill_path):
            return
        if not os.path.isfile(self._spill_path):
            log.error("%s is not a regular file; no usage rows loaded from it", self._spill_path)
            return
        contents = read_rows(self._spill_path)
        for number, _, why in contents.bad_lines:
            log.error("%s line %d is not a usage row (%s); skipped, the other rows are kept",
                      self._spill_path, number, why)
        self.spill_lines_skipped += len(contents.bad_lines)
        self._spill_bad = [raw for _, raw, _ in contents.bad_lines]
        loaded = contents.rows
        self._pending.extendleft(reversed(loaded))
        self._spilled_rows = len(loaded)
        self._spill_key = f"usage-spill:{contents.digest}"
        self.accepted += len(loaded)
        if not loaded:
            self._retire_spill_file()
        else:
            log.info("loaded %d unwritten usage rows from %s%s", len(loaded), self._spill_path,
                     f" ({len(contents.bad_lines)} lines skipped)" if contents.bad_lines else "")

    def _retire_spill_file(self) -> None:
        """Its rows are in the database; lines that were not rows go to a file
        of their own for a person to look at, never silently away."""
        if self._spill_bad:
            corrupt = self._spill_path + ".corrupt"  # type: ignore[operator]
            kept, error = append_lines(corrupt, [line + b"\n" for line in self._spill_bad])
            if kept < len(self._spill_bad):
                log.error("could not keep the %d unreadable spill lines in %s (%s); %s is "
                          "left in place", len(self._spill_bad), corrupt, error, self._spill_path)
                return
            log.warning("%d unreadable lines of %s kept in %s", kept, self._spill_path, corrupt)
            self._spill_bad = []
        try:
            os.remove(self._spill_path)  # type: ignore[arg-type]
        except FileNotFoundError:
            pass




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
