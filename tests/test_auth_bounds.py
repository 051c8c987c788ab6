"""The pieces behind the hostile-client defences, each on its own: the bcrypt
gate on real threads, the client-address rule, and the bound on every integer
a management route accepts."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from proxy.auth.bcrypt_gate import BcryptGate
from proxy.auth.client_address import resolve
from proxy.errors import RateLimited

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "api"


# -- the gate -------------------------------------------------------------------------


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=True)


def blocked(pool, release: threading.Event, started: threading.Event | None = None):
    def work():
        if started is not None:
            started.set()
        assert release.wait(10)
        return "done"

    return lambda: pool.submit(work)


async def test_gate_runs_at_most_its_concurrency_and_refuses_beyond_the_queue(pool):
    gate = BcryptGate(concurrency=1)
    release = threading.Event()
    running = asyncio.ensure_future(gate.run(blocked(pool, release), queue=2))
    waiting = [asyncio.ensure_future(gate.run(blocked(pool, release), queue=2)) for _ in range(2)]
    await asyncio.sleep(0)
    assert (gate.free, gate.waiting) == (0, 2)
    with pytest.raises(RateLimited) as refused:
        await gate.run(blocked(pool, release), queue=2)
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "1"
    assert gate.refused == 1
    release.set()
    assert await asyncio.gather(running, *waiting) == ["done"] * 3
    assert (gate.free, gate.waiting) == (1, 0)


async def test_a_cancelled_waiter_leaves_the_queue_and_never_runs(pool):
    gate = BcryptGate(concurrency=1)
    release = threading.Event()
    ran = threading.Event()
    running = asyncio.ensure_future(gate.run(blocked(pool, release), queue=5))
    waiter = asyncio.ensure_future(gate.run(blocked(pool, threading.Event(), ran), queue=5))
    await asyncio.sleep(0)
    assert gate.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    release.set()
    assert await running == "done"
    assert not ran.is_set()
    assert gate.free == 1


async def test_a_cancelled_running_check_keeps_its_slot_until_the_thread_ends(pool):
    gate = BcryptGate(concurrency=1)
    release, started = threading.Event(), threading.Event()
    running = asyncio.ensure_future(gate.run(blocked(pool, release, started), queue=5))
    while not started.is_set():
        await asyncio.sleep(0.001)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert gate.free == 0  # the thread still burns CPU, so the bound still counts it
    release.set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while gate.free == 0:
        assert loop.time() < deadline
        await asyncio.sleep(0.001)
    assert gate.free == 1


# -- the client's address -------------------------------------------------------------


TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
           ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("198.51.100.1", ["203.0.113.5"], "198.51.100.1"),  # untrusted peer: its header is ignored
    ("127.0.0.1", [], "127.0.0.1"),  # a trusted proxy that forwards nothing is the client
    ("127.0.0.1", ["203.0.113.5"], "203.0.113.5"),
    ("127.0.0.1", ["6.6.6.6, 203.0.113.5, 10.1.1.1"], "203.0.113.5"),  # right to left, skip trusted hops
    ("127.0.0.1", ["6.6.6.6", "203.0.113.5,10.1.1.1"], "203.0.113.5"),  # several header lines are one list
    ("127.0.0.1", ["203.0.113.5, garbage, 10.1.1.1"], "10.1.1.1"),  # not an address: stop at the last trusted hop
    ("127.0.0.1", ["10.2.2.2, 10.1.1.1"], "10.2.2.2"),  # every hop trusted: the leftmost
    ("127.0.0.1", ["2001:db8::1, fd00::2"], "2001:db8::1"),
    ("::ffff:127.0.0.1", ["203.0.113.5"], "203.0.113.5"),  # IPv4 through a dual-stack socket
    ("::ffff:198.51.100.1", [], "198.51.100.1"),
    (None, ["203.0.113.5"], "unknown"),
])
def test_client_address(peer, forwarded, expected):
    assert resolve(peer, forwarded, TRUSTED) == expected


def test_without_trusted_proxies_the_peer_is_always_the_client():
    assert resolve("127.0.0.1", ["203.0.113.5"], ()) == "127.0.0.1"


# -- every integer in the API schemas is bounded -----------------------------------------------


def _integers(node, path="#"):
    if isinstance(node, dict):
        types = node.get("type", [])
        types = [types] if isinstance(types, str) else types
        if "integer" in types or "number" in types:
            yield path, node
        for name, child in node.items():
            yield from _integers(child, f"{path}/{name}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _integers(child, f"{path}/{i}")


def test_every_number_in_the_api_schemas_has_a_maximum():
    found = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        for pointer, node in _integers(orjson.loads(path.read_bytes())):
            found[f"{path.name}{pointer}"] = node
    assert len(found) >= 14  # the walk really sees the schemas' numbers
    unbounded = [name for name, node in found.items() if "maximum" not in node and "exclusiveMaximum" not in node]
    assert unbounded == []
    too_big = [name for name, node in found.items() if node.get("maximum", 0) > 2**63 - 1]
    assert too_big == []
