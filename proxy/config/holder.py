"""The one reference to the live Snapshot, and the reload that swaps it.

Reload is build → compare → swap (Caddy's order): a new snapshot is built and
validated completely; identical content is a no-op; any error keeps the old
snapshot serving and is kept in `last_error` for `GET /api/admin/config`.
Checks run after a build and before the swap, for what only the running app
can know (which plans accounts are on); a problem they report rejects the
reload like a bad file does. Listeners run after a swap so run-time state
(health, balancer, limiter) can carry over what belongs to unchanged
upstreams and plans. Every applied reload's diff is logged and kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from .build import build_snapshot
from .diff import config_diff, describe
from .snapshot import Snapshot
from .source import ConfigError, ConfigProblem, config_files, read_source

log = logging.getLogger("bluesminds.config")

Listener = Callable[[Snapshot, Snapshot], None]
# (current, candidate) -> problems that forbid the swap; empty to allow it.
Check = Callable[[Snapshot, Snapshot], Awaitable[list[ConfigProblem]]]


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
        self.last_diff: dict | None = None
        self._clock = clock
        self._environ = environ
        self._listeners: list[Listener] = []
        self._checks: list[Check] = []
        # Called after a rejected reload with (content digest, version still serving,
        # number of problems); the digest lets a listener tell new bad content from old.
        self.on_reject: list[Callable[[str, int, int], None]] = []
        self._lock = asyncio.Lock()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_check(self, check: Check) -> None:
        self._checks.append(check)

    def remove_check(self, check: Check) -> None:
        self._checks.remove(check)

    def _build(self) -> tuple[Snapshot, list[str]]:
        environ = os.environ if self._environ is None else self._environ
        return build_snapshot(read_source(self.path), self.path, environ=environ)

    def _reject(self, error: ConfigError, reason: str, digest: str) -> ReloadResult:
        self.failed_reloads += 1
        self.last_error = str(error)
        self.last_error_at = self._clock()
        for problem in error.problems:
            log.error("config reload rejected (%s), keeping version %d: %s",
                      reason, self.version, problem)
        for listener in self.on_reject:
            try:
                listener(digest, self.version, len(error.problems))
            except Exception:
                log.exception("config reject listener failed")
        return ReloadResult(False, self.version, self.current.digest, self.last_error)

    async def _checked(self, snapshot: Snapshot) -> ConfigError | None:
        problems: list[ConfigProblem] = []
        for check in self._checks:
            try:
                problems.extend(await check(self.current, snapshot))
            except Exception as exc:
                # A check that cannot answer (the database gone) must not wave the reload through.
                log.exception("config reload check failed")
                problems.append(ConfigProblem(f"the reload could not be checked ({type(exc).__name__}); "
                                              "the previous config keeps serving"))
        return ConfigError(problems) if problems else None

    async def _apply(self, built: tuple[Snapshot, list[str]] | ConfigError, reason: str,
                     digest: str = "") -> ReloadResult:
        if isinstance(built, ConfigError):
            return self._reject(built, reason, digest)
        snapshot, warnings = built
        if snapshot.digest == self.current.digest:
            # A good config, even an unchanged one, clears a stale error.
            self.last_error = None
            return ReloadResult(False, self.version, snapshot.digest)
        refused = await self._checked(snapshot)
        if refused is not None:
            return self._reject(refused, reason, snapshot.digest)
        self.last_error = None
        for warning in warnings:
            log.warning("config warning: %s", warning)
        old = self.current
        self.current = snapshot
        self.version += 1
        self.loaded_at = self._clock()
        self.reloads += 1
        diff = config_diff(old, snapshot)
        self.last_diff = {"version": self.version, "at": self.loaded_at, **diff}
        log.info("config version %d loaded (%s, digest %s): %s", self.version, reason, snapshot.digest,
                 describe(diff))
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

    async def reload(self, *, reason: str = "manual") -> ReloadResult:
        # Reading and validating happen on a thread; the swap is one reference
        # assignment on the loop, so no request sees a half-built snapshot.
        async with self._lock:
            loop = asyncio.get_running_loop()
            built = await loop.run_in_executor(None, self._try_build)
            digest = ""
            if isinstance(built, ConfigError):
                digest = await loop.run_in_executor(None, files_digest, self.path)
            return await self._apply(built, reason, digest)

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
            "last_diff": self.last_diff,
        }


def files_digest(path: str) -> str:
    """A digest of the config files' bytes as they are now, readable or not
    (a file that does not parse has no Source to take `digest_of` from)."""
    h = hashlib.sha256()
    try:
        files = config_files(path)
    except OSError:
        files = []
    for file in sorted(files):
        try:
            with open(file, "rb") as fh:
                data = fh.read(64 * 1024 * 1024)
        except OSError as exc:
            data = f"<unreadable: {exc.errno}>".encode()
        h.update(file.encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:16]
