"""What triggers a reload: a change to a config file, or SIGHUP.

The watcher follows the config folder (or the single file's folder) rather
than the files themselves, as Traefik does: editors and `os.replace` swap a
file for a new inode, and Kubernetes swaps a whole `..data` symlink, and a
watch on the old inode would never fire again. Changes are gathered for a
short quiet period so one save that touches a file twice costs one reload,
and then the changed files are re-stat'ed until their size and mtime hold
still for `settle` seconds: an editor or `cp` that writes a file in pieces
would otherwise be read half-written, and half a plans file is often still
valid YAML (with the limits missing). Whatever the trigger, the reload itself is the holder's: all-or-nothing, a
no-op for identical content.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import AsyncIterator, Awaitable, Callable, Iterable

import watchfiles
from aiohttp import web

from ..appkeys import CONFIG, WATCHER
from .holder import ConfigHolder
from .source import managed_file_for

log = logging.getLogger("bluesminds.config")

# A save is reported after this long without further changes…
QUIET_MS = 50
# …or after this long at most while changes keep coming.
MAX_BATCH_MS = 400
# How long to wait before watching again when the folder vanished or the
# watch broke (for instance, the folder being recreated).
RETRY_S = 1.0
# A changed file is read once its size and mtime held still this long…
SETTLE_S = 0.1
# …checked at most this many times (then it is read as it is, and the
# validation and reload checks stand guard).
SETTLE_CHECKS = 30
# Kubernetes ConfigMap volumes publish a new version by swapping this symlink.
_K8S_SWAP = "..data"


FileState = tuple[int, int] | None  # (size, mtime_ns); None when missing


def file_state(path: str) -> FileState:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


async def wait_until_settled(paths: Iterable[str], *, interval: float = SETTLE_S,
                             max_checks: int = SETTLE_CHECKS,
                             stat: Callable[[str], FileState] = file_state,
                             sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> bool:
    """Wait until no file in `paths` changes across one `interval`; False if it never did."""
    paths = list(paths)
    before = [stat(p) for p in paths]
    for _ in range(max_checks):
        await sleep(interval)
        now = [stat(p) for p in paths]
        if now == before:
            return True
        before = now
    return False


class ConfigWatcher:
    def __init__(self, holder: ConfigHolder, *, settle: float = SETTLE_S,
                 settle_checks: int = SETTLE_CHECKS,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.holder = holder
        self.settle = settle
        self.settle_checks = settle_checks
        self._sleep = sleep
        self.sighup_installed = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what to watch ---------------------------------------------------------------

    def folder(self) -> str:
        path = os.path.realpath(self.holder.path)
        return path if os.path.isdir(path) else os.path.dirname(path)

    def is_config_file(self, path: str) -> bool:
        """Does a change to `path` concern the config? (The same files the loader reads.)"""
        name = os.path.basename(path)
        if name == _K8S_SWAP:
            return True
        config = self.holder.path
        if os.path.isdir(config):
            return _folder_of(path) == os.path.realpath(config) and \
                name.endswith((".yaml", ".yml")) and not name.startswith(".")
        # Compare folder and name, not resolved files: the config file may be
        # a symlink whose target changes, and a deleted file resolves to nothing.
        key = (_folder_of(path), name)
        return key in {(_folder_of(f), os.path.basename(f)) for f in (config, managed_file_for(config))}

    def _filter(self, change: watchfiles.Change, path: str) -> bool:
        return self.is_config_file(path)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._task = asyncio.create_task(self._watch(), name="config-watcher")
        # One turn of the loop runs the task up to its first wait, by which
        # time the OS watch exists: an edit made once start() returns is seen.
        await asyncio.sleep(0)
        self._install_sighup()

    async def stop(self) -> None:
        self._remove_sighup()
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=2.0)
            except asyncio.TimeoutError:
                pass  # wait_for has cancelled it
            self._task = None
        # A reload already started finishes: it only swaps a reference.
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _watch(self) -> None:
        folder = self.folder()
        log.info("watching config files in %s", folder)
        while not self._stop.is_set():
            try:
                async for changes in watchfiles.awatch(
                        folder, watch_filter=self._filter, debounce=MAX_BATCH_MS, step=QUIET_MS,
                        stop_event=self._stop, recursive=False):
                    paths = sorted({path for _, path in changes})
                    files = [os.path.basename(path) for path in paths]
                    log.debug("config files changed: %s", ", ".join(files))
                    if not await wait_until_settled(paths, interval=self.settle, max_checks=self.settle_checks,
                                                    sleep=self._sleep):
                        log.warning("config files still changing after %.1fs (%s); reading them as they are",
                                    self.settle * self.settle_checks, ", ".join(files))
                    await self.holder.reload(reason=f"file change: {', '.join(files)}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("config watcher stopped (%s: %s); retrying in %.0fs",
                            type(exc).__name__, exc, RETRY_S)
                try:
                    await asyncio.wait_for(self._stop.wait(), RETRY_S)
                except asyncio.TimeoutError:
                    pass

    # -- SIGHUP ---------------------------------------------------------------------

    def on_sighup(self) -> asyncio.Task:
        """Start a reload; called by the loop's signal handler (and by tests)."""
        log.info("SIGHUP received: reloading config")
        task = asyncio.get_running_loop().create_task(self.holder.reload(reason="SIGHUP"))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    def _install_sighup(self) -> None:
        # Only the main thread's loop may own signal handlers; a gateway run
        # inside another thread (a test, an embedding app) reloads by API only.
        if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
            return
        try:
            self._loop.add_signal_handler(signal.SIGHUP, self.on_sighup)
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            log.info("SIGHUP reload unavailable here (%s)", exc)
            return
        self.sighup_installed = True

    def _remove_sighup(self) -> None:
        if self.sighup_installed and self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGHUP)
            self.sighup_installed = False


def _folder_of(path: str) -> str:
    # Some platforms report events under the resolved path (macOS: /private/tmp).
    return os.path.realpath(os.path.dirname(os.path.abspath(path)))




def setup(app: web.Application) -> None:
    app[WATCHER] = ConfigWatcher(app[CONFIG])
    app.cleanup_ctx.append(_watcher_ctx)


async def _watcher_ctx(app: web.Application) -> AsyncIterator[None]:
    watcher = app[WATCHER]
    await watcher.start()
    yield
    await watcher.stop()

