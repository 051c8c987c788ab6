"""The one reference to the live Snapshot, and the reload that swaps it.

Reload is build → compare → swap (Caddy's order): a new snapshot is built and
validated completely; identical content is a no-op; any error keeps the old
snapshot serving and is kept in `last_error` for `GET /api/admin/config`.
Listeners run after a swap so run-time state (health, balancer, limiter) can
carry over what belongs to unchanged upstreams and plans.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

from .build import build_snapshot
from .snapshot import Snapshot
from .source import ConfigError, ConfigProblem, read_source

log = logging.getLogger("bluesminds.config")

Listener = Callable[[Snapshot, Snapshot], None]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    version: int
    digest: str
    error: str | None = None


class ConfigHolder:
    def __init__(self, path: str, snapshot: Snapshot, *, clock: Callable[[], float] = time.time,
                 environ=None) -> None:
        self.path = path
        self.current = snapshot
        self.version = 1
        self.loaded_at = clock()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.reloads = 0
        self.failed_reloads = 0
        self._clock = clock
        self._environ = environ
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _build(self) -> tuple[Snapshot, list[str]]:
        environ = os.environ if self._environ is None else self._environ
        return build_snapshot(read_source(self.path), self.path, environ=environ)

    def _apply(self, built: tuple[Snapshot, list[str]] | ConfigError, reason: str) -> ReloadResult:
        if isinstance(built, ConfigError):
            self.failed_reloads += 1
            self.last_error = str(built)
            self.last_error_at = self._clock()
            for problem in built.problems:
                log.error("config reload rejected (%s), keeping version %d: %s",
                          reason, self.version, problem)
            return ReloadResult(False, self.version, self.current.digest, self.last_error)
        snapshot, warnings = built
        # A good config, even an unchanged one, clears a stale error.
        self.last_error = None
        if snapshot.digest == self.current.digest:
            return ReloadResult(False, self.version, snapshot.digest)
        for warning in warnings:
            log.warning("config warning: %s", warning)
        old = self.current
        self.current = snapshot
        self.version += 1
        self.loaded_at = self._clock()
        self.reloads += 1
        log.info("config version %d loaded (%s, digest %s)", self.version, reason, snapshot.digest)
        for listener in self._listeners:
            try:
                listener(old, snapshot)
            except Exception:  # a listener's bug must not undo a good reload
                log.exception("config listener failed after reload")
        return ReloadResult(True, self.version, snapshot.digest)

    def _try_build(self) -> tuple[Snapshot, list[str]] | ConfigError:
        try:
            return self._build()
        except ConfigError as exc:
            return exc
        except Exception as exc:
            # A builder bug must reject the reload like a bad file does, not
            # kill the watcher or the admin request that asked for it.
            log.exception("config build failed unexpectedly")
            return ConfigError([ConfigProblem(
                f"internal error while building the config ({type(exc).__name__}); "
                "the previous config keeps serving")])

    def reload_sync(self, *, reason: str = "manual") -> ReloadResult:
        return self._apply(self._try_build(), reason)

    async def reload(self, *, reason: str = "manual") -> ReloadResult:
        # Reading and validating happen on a thread; the swap is one reference
        # assignment on the loop, so no request sees a half-built snapshot.
        async with self._lock:
            built = await asyncio.get_running_loop().run_in_executor(None, self._try_build)
            return self._apply(built, reason)

    def status(self) -> dict:
        return {
            "version": self.version,
            "digest": self.current.digest,
            "loaded_at": self.loaded_at,
            "files": list(self.current.files),
            "reloads": self.reloads,
            "failed_reloads": self.failed_reloads,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
