"""Reload triggers: a file change in the config folder, and SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest

from proxy.config import load_config
from proxy.config.holder import ConfigHolder
from proxy.config.watcher import ConfigWatcher, wait_until_settled

GATEWAY = "models:\n  m1: {}\n"
ONE = "upstreams:\n  - name: a\n    url: http://127.0.0.1:9\n    models: '*'\n"
TWO = ONE + "  - name: b\n    url: http://127.0.0.1:10\n    models: '*'\n"


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `check()` holds; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


@pytest.fixture
def config_dir(tmp_path) -> str:
    folder = tmp_path / "config"
    folder.mkdir()
    write(str(folder / "gateway.yaml"), GATEWAY)
    write(str(folder / "upstreams.yaml"), ONE)
    return str(folder)


async def started(path: str) -> tuple[ConfigHolder, ConfigWatcher]:
    holder = ConfigHolder(path, load_config(path))
    watcher = ConfigWatcher(holder)
    await watcher.start()
    return holder, watcher


@pytest.fixture
async def watched(config_dir: str) -> AsyncIterator[tuple[ConfigHolder, ConfigWatcher]]:
    holder, watcher = await started(config_dir)
    yield holder, watcher
    await watcher.stop()


async def test_file_edit_reloads(watched, config_dir: str) -> None:
    holder, _ = watched
    write(os.path.join(config_dir, "upstreams.yaml"), TWO)
    await wait_for(lambda: holder.version == 2)
    assert [u.name for u in holder.current.upstreams] == ["a", "b"]


async def test_editor_style_replace_reloads(watched, config_dir: str) -> None:
    holder, _ = watched
    # Editors write a new file and rename it over the old one.
    tmp = os.path.join(config_dir, ".upstreams.yaml.swp")
    write(tmp, TWO)
    os.replace(tmp, os.path.join(config_dir, "upstreams.yaml"))
    await wait_for(lambda: holder.version == 2)


async def test_new_file_in_folder_reloads(watched, config_dir: str) -> None:
    holder, _ = watched
    write(os.path.join(config_dir, "more.yml"), "upstreams:\n  - name: c\n    url: http://127.0.0.1:11\n"
                                                "    models: '*'\n")
    await wait_for(lambda: holder.version == 2)
    assert sorted(holder.current.upstream_by_name) == ["a", "c"]


async def test_bad_edit_is_reported_then_a_good_one_applies(watched, config_dir: str) -> None:
    holder, _ = watched
    path = os.path.join(config_dir, "upstreams.yaml")
    write(path, ONE + "    weight: 0\n")
    await wait_for(lambda: holder.last_error is not None)
    assert holder.last_error == f"{path}:5: upstreams[0].weight: 0 is too small: it must be greater than 0"
    assert holder.version == 1
    write(path, TWO)
    await wait_for(lambda: holder.version == 2)
    assert holder.last_error is None


async def test_single_file_config_watches_its_managed_file(tmp_path) -> None:
    config = str(tmp_path / "gateway.yaml")
    write(config, GATEWAY + ONE)
    holder, watcher = await started(config)
    try:
        write(str(tmp_path / "gateway.managed.yaml"), "upstreams:\n  - name: m\n    url: http://127.0.0.1:12\n"
                                                      "    models: '*'\n")
        await wait_for(lambda: holder.version == 2)
        assert [u.name for u in holder.current.upstreams] == ["a", "m"]
    finally:
        await watcher.stop()


async def test_config_folder_reached_through_a_symlink(config_dir: str, tmp_path) -> None:
    link = str(tmp_path / "current")
    os.symlink(config_dir, link)
    holder, watcher = await started(link)
    try:
        write(os.path.join(link, "upstreams.yaml"), TWO)
        await wait_for(lambda: holder.version == 2)
    finally:
        await watcher.stop()


def test_only_config_files_count(tmp_path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    write(str(folder / "gateway.yaml"), GATEWAY + ONE)
    in_dir = ConfigWatcher(ConfigHolder(str(folder), load_config(str(folder))))
    assert in_dir.folder() == str(folder)
    assert in_dir.is_config_file(str(folder / "gateway.yaml"))
    assert in_dir.is_config_file(str(folder / "servers.managed.yaml"))
    assert in_dir.is_config_file(str(folder / "..data"))  # Kubernetes ConfigMap swap
    assert not in_dir.is_config_file(str(folder / ".servers.managed.yaml.abc.tmp"))
    assert not in_dir.is_config_file(str(folder / "notes.txt"))
    assert not in_dir.is_config_file(str(folder / "sub" / "x.yaml"))

    single = str(folder / "gateway.yaml")
    one_file = ConfigWatcher(ConfigHolder(single, load_config(single)))
    assert one_file.folder() == str(folder)
    assert one_file.is_config_file(single)
    assert one_file.is_config_file(str(folder / "gateway.managed.yaml"))
    assert not one_file.is_config_file(str(folder / "other.yaml"))


def record_reasons(holder: ConfigHolder) -> list[str]:
    reasons: list[str] = []
    reload = holder.reload

    async def spy(*, reason: str = "manual"):
        reasons.append(reason)
        return await reload(reason=reason)

    holder.reload = spy
    return reasons


async def test_sighup_handler_reloads(config_dir: str) -> None:
    holder = ConfigHolder(config_dir, load_config(config_dir))
    reasons = record_reasons(holder)
    watcher = ConfigWatcher(holder)  # not started: no file events
    write(os.path.join(config_dir, "upstreams.yaml"), TWO)
    result = await watcher.on_sighup()
    assert (result.version, reasons) == (2, ["SIGHUP"])


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
async def test_real_sighup_goes_through_the_loop_handler(config_dir: str) -> None:
    holder = ConfigHolder(config_dir, load_config(config_dir))
    reasons = record_reasons(holder)
    watcher = ConfigWatcher(holder)
    await watcher.start()
    try:
        if not watcher.sighup_installed:
            pytest.skip("signal handlers need the main thread")
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: "SIGHUP" in reasons)
    finally:
        await watcher.stop()
    assert not watcher.sighup_installed


async def test_stop_is_prompt_and_idempotent(config_dir: str) -> None:
    _, watcher = await started(config_dir)
    began = time.monotonic()
    await watcher.stop()
    await watcher.stop()
    assert time.monotonic() - began < 2.0


# -- a file still being written is not read --------------------------------------------

FULL_PLANS = "plans:\n  free:\n    rpm: 5\n    tpm: 1000\n    requests_per_day: 50\n"
HALF_PLANS = "plans:\n  free:\n    rpm: 5\n"  # still valid YAML: the limits below rpm are just gone


async def test_settling_waits_until_size_and_mtime_hold_still() -> None:
    states = iter([(1, 1), (2, 2), (3, 3), (3, 3)])
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    assert await wait_until_settled(["f"], interval=0.25, max_checks=10, stat=lambda p: next(states), sleep=sleep)
    assert sleeps == [0.25, 0.25, 0.25]


async def test_settling_gives_up_after_its_bound() -> None:
    counter = iter(range(100))

    async def sleep(seconds: float) -> None:
        pass

    assert not await wait_until_settled(["f"], interval=0.1, max_checks=4,
                                        stat=lambda p: (next(counter), 0), sleep=sleep)
    assert next(counter) == 5  # the first look and four checks


async def test_a_file_still_being_written_is_read_once_complete(config_dir: str) -> None:
    plans = os.path.join(config_dir, "plans.yaml")
    write(plans, FULL_PLANS)
    holder = ConfigHolder(config_dir, load_config(config_dir))
    seen: list[dict] = []
    holder.subscribe(lambda old, new: seen.append(dict(new.plans)))
    finished = asyncio.Event()

    async def writer_finishes_during_the_wait(seconds: float) -> None:
        # The first wait is where a slow writer completes the file.
        if not finished.is_set():
            with open(plans, "a", encoding="utf-8") as fh:
                fh.write("    tpm: 2000\n    requests_per_day: 70\n")
            os.utime(plans, ns=(time.time_ns(), time.time_ns() + 10**9))
            finished.set()
        await asyncio.sleep(0)

    watcher = ConfigWatcher(holder, settle=0.05, sleep=writer_finishes_during_the_wait)
    await watcher.start()
    try:
        write(plans, HALF_PLANS)
        await wait_for(lambda: holder.version == 2)
    finally:
        await watcher.stop()
    assert len(seen) == 1
    free = seen[0]["free"]
    assert (free.rpm, free.tpm, free.requests_per_day) == (5, 2000, 70)
