"""upstream.down / upstream.up and config.reload_failed: system events for YAML endpoints.

Their sources are synchronous callbacks (the health monitor, sometimes on the
request path; the config holder), so a callback only queues the event; a
background task writes queued events through the store, off the hot path.
An upstream's events alternate: down once when it leaves rotation (probes
failed, or passive ejection), up once when it is back. A rejected reload
fires once per distinct content digest, however many watcher events or
retries see the same bad files (the "already fired" record is durable).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable

from ..routing.health import HEALTHY
from ..store import Store
from .outbox import emit, emit_once

log = logging.getLogger("bluesminds.webhooks")


class SystemEvents:
    def __init__(self, store: Store, *, clock: Callable[[], float], written: Callable[[], None]) -> None:
        self._store = store
        self._clock = clock
        self._written = written
        self._queue: deque[tuple[str | None, str, dict, float]] = deque()
        self._wake = asyncio.Event()
        # The writer loop and an explicit flush (shutdown, tests) may overlap:
        # each must write and drop only what no other flush has taken.
        self._flushing = asyncio.Lock()
        self._out_of_rotation: set[str] = set()

    # -- callbacks (synchronous, cheap) ---------------------------------------------

    def upstream_changed(self, name: str, state: str) -> None:
        if state == HEALTHY:
            if name not in self._out_of_rotation:
                return
            self._out_of_rotation.discard(name)
            self._put(None, "upstream.up", {"upstream": name, "state": state})
        elif name not in self._out_of_rotation:
            self._out_of_rotation.add(name)
            self._put(None, "upstream.down", {"upstream": name, "state": state})

    def reload_failed(self, digest: str, serving_version: int, problems: int) -> None:
        self._put(f"config.reload_failed:{digest}", "config.reload_failed",
                  {"digest": digest, "serving_version": serving_version, "problems": problems})

    def _put(self, once_key: str | None, event_type: str, data: dict) -> None:
        self._queue.append((once_key, event_type, data, self._clock()))
        self._wake.set()

    # -- writer -----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not record system webhook events; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def flush(self) -> None:
        async with self._flushing:
            await self._flush_queued()

    async def _flush_queued(self) -> None:
        if not self._queue:
            return
        batch = list(self._queue)

        def write(conn) -> None:
            for once_key, event_type, data, at in batch:
                if once_key is None:
                    emit(conn, event_type, data, now=at)
                else:
                    emit_once(conn, once_key, event_type, data, now=at)

        await self._store.write(write)
        for _ in batch:
            self._queue.popleft()
        self._written()
