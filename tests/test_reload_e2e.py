"""Hot reload under traffic, through the real gateway and real fake upstreams.

A reload never fails a request: in-flight ones finish on the snapshot they
started with, new ones see the new config, and a bad edit leaves the last good
config serving while the status route shows what is wrong.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
import pytest

from proxy.appkeys import CONFIG
from proxy.fake_upstream import FakeUpstream, start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry

ADMIN_ENV = "BLUESMINDS_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-reload-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `check()` holds; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    ups = {name: await start_fake_upstream(name=name) for name in ("a", "b")}
    ups["slow"] = await start_fake_upstream(name="slow", stream_chunks=8, chunk_delay=0.03)
    yield ups
    for up in ups.values():
        await up.stop()


@pytest.fixture
async def gateway(tmp_path, fakes, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GatewayHarness]:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", fakes["a"].url)],
                                   admin={"key_env": ADMIN_ENV})
    await harness.start()
    yield harness
    await harness.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def chat(gateway: GatewayHarness, http: aiohttp.ClientSession) -> tuple[int, dict]:
    async with http.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=gateway.headers()) as resp:
        return resp.status, await resp.json()


def served_by(body: dict) -> str:
    return body["choices"][0]["message"]["content"].split(" ")[0]


def upstreams_file(gateway: GatewayHarness) -> str:
    return os.path.join(gateway.config_dir, "upstreams.yaml")


async def test_file_edit_serves_new_requests(gateway: GatewayHarness, http, fakes) -> None:
    status, body = await chat(gateway, http)
    assert (status, served_by(body)) == (200, "a")
    holder = gateway.app[CONFIG]
    gateway.sections["upstreams"] = [upstream_entry("b", fakes["b"].url)]
    gateway.save()
    await wait_for(lambda: holder.version == 2)
    status, body = await chat(gateway, http)
    assert (status, served_by(body)) == (200, "b")


async def test_admin_reload_and_status(gateway: GatewayHarness, http, fakes) -> None:
    async with http.post(gateway.url + "/api/admin/reload", headers=ADMIN) as resp:
        assert (resp.status, (await resp.json())["changed"]) == (200, False)
    with open(upstreams_file(gateway), "w") as fh:
        fh.write("upstreams:\n  - name: b\n    url: http://x\n    models: '*'\n    weight: heavy\n")
    async with http.post(gateway.url + "/api/admin/reload", headers=ADMIN) as resp:
        assert resp.status == 400
    async with http.get(gateway.url + "/api/admin/config", headers=ADMIN) as resp:
        status = await resp.json()
        assert resp.headers["ETag"] == f'"{status["digest"]}"'
    assert status["version"] == 1
    assert status["last_error"] == f"{upstreams_file(gateway)}:5: upstreams[0].weight: 'heavy' is not of type 'integer'"
    _, body = await chat(gateway, http)
    assert served_by(body) == "a"


async def test_in_flight_stream_finishes_on_its_snapshot(gateway: GatewayHarness, http, fakes) -> None:
    gateway.sections["upstreams"] = [upstream_entry("slow", fakes["slow"].url)]
    gateway.save()
    async with http.post(gateway.url + "/api/admin/reload", headers=ADMIN) as resp:
        assert (await resp.json())["version"] == 2

    async with http.post(gateway.url + "/v1/chat/completions", headers=gateway.headers(),
                         json={**CHAT, "stream": True}) as stream:
        assert stream.status == 200
        first = await stream.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        # The upstream serving this stream leaves the config mid-stream.
        gateway.sections["upstreams"] = [upstream_entry("b", fakes["b"].url)]
        gateway.save()
        async with http.post(gateway.url + "/api/admin/reload", headers=ADMIN) as resp:
            assert (await resp.json())["version"] == 3
        status, body = await chat(gateway, http)
        assert (status, served_by(body)) == (200, "b")
        rest = await stream.read()

    events = [e[len(b"data: "):] for e in (first + rest).split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    content = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or ""
                      for e in events[:-1] if orjson.loads(e)["choices"])
    assert content == "slow says hello from the fake upstream says"
    assert fakes["slow"].stats()["requests"] == 1


def good(fakes: dict[str, FakeUpstream], step: int) -> str:
    # Alternate between two different fleets so every good edit is a change.
    if step % 2 == 1:
        return f"upstreams:\n  - name: b\n    url: {fakes['b'].url}\n    models: '*'\n"
    return (f"upstreams:\n  - name: a\n    url: {fakes['a'].url}\n    models: '*'\n"
            f"  - name: b\n    url: {fakes['b'].url}\n    models: '*'\n    weight: 2\n")


BAD = {
    "invalid YAML": "upstreams:\n  - name: b\n    url: [http://x\n",
    "schema-invalid": "upstreams:\n  - name: b\n    url: http://x\n    models: '*'\n    priority: -3\n",
    "truncated": "upstreams:\n  - name: b\n    ur",
}


def write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


async def test_hundred_reloads_under_load_fail_no_request(gateway: GatewayHarness, http, fakes) -> None:
    holder = gateway.app[CONFIG]
    path = upstreams_file(gateway)
    stop = asyncio.Event()
    outcomes: dict[int, int] = {}
    failures: list[tuple[int, bytes]] = []

    async def load(stream: bool) -> None:
        payload = {**CHAT, "stream": True} if stream else CHAT
        while not stop.is_set():
            async with http.post(gateway.url + "/v1/chat/completions", json=payload,
                                 headers=gateway.headers()) as resp:
                raw = await resp.read()
                ok = resp.status == 200 and (not stream or raw.endswith(b"data: [DONE]\n\n"))
                outcomes[ok] = outcomes.get(ok, 0) + 1
                if not ok:
                    failures.append((resp.status, raw[-300:]))

    workers = [asyncio.create_task(load(stream=i % 2 == 1)) for i in range(4)]
    good_edits = 0
    last_good = None
    try:
        for step in range(100):
            # Each reload happens with traffic flowing, not in a lull.
            served = sum(outcomes.values())
            await wait_for(lambda: sum(outcomes.values()) > served)
            kind = ("good", "invalid YAML", "schema-invalid", "truncated")[step % 4]
            if kind == "good":
                good_edits += 1
                last_good = good(fakes, good_edits)  # the first one replaces a by b outright
                write_atomically(path, last_good)
            else:
                # A plain write: the watcher may even see it half-written.
                with open(path, "w") as fh:
                    fh.write(BAD[kind])
            async with http.post(gateway.url + "/api/admin/reload", headers=ADMIN) as resp:
                assert resp.status == (200 if kind == "good" else 400), await resp.text()
    finally:
        stop.set()
        await asyncio.gather(*workers)

    assert outcomes.get(False, 0) == 0, failures[:5]
    assert outcomes[True] >= 100
    assert holder.version == 1 + good_edits
    # The last edit was bad: the last good config serves, and the status says why.
    assert last_good == good(fakes, 1)  # b alone
    async with http.get(gateway.url + "/api/admin/config", headers=ADMIN) as resp:
        status = await resp.json()
    assert status["version"] == 1 + good_edits
    assert status["last_error"] == f"{path}:3: invalid YAML: could not find expected ':' " \
                                   "(while scanning a simple key that starts on line 3)"
    fakes["a"].reset_stats()
    for _ in range(5):
        status_code, body = await chat(gateway, http)
        assert (status_code, served_by(body)) == (200, "b")
    assert fakes["a"].stats()["requests"] == 0
