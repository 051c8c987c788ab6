"""A real `bluesminds serve` killed with SIGKILL mid-delivery delivers the event after a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import aiohttp

from proxy.fake_upstream import start_fake_upstream

from .db_access import query
from .gateway_harness import GatewayHarness, serve_process, upstream_entry
from .litellm_process import free_port
from .test_webhooks_support import (
    ADMIN_KEY,
    ENCRYPTION_KEY,
    YAML_SECRET,
    Receiver,
    verify,
    webhooks_section,
)


def _delivery_state(db_path: str) -> list[tuple]:
    return query(db_path, "SELECT d.state, ev.type FROM webhook_deliveries d "
                          "JOIN webhook_events ev ON ev.id = d.event_id")


async def test_kill_9_mid_delivery_then_restart_delivers_the_event(tmp_path):
    fake = await start_fake_upstream(name="u")
    receiver = await Receiver().start()
    receiver.hold = asyncio.Event()  # the first attempt hangs until the gateway is dead
    section = webhooks_section(endpoints=[{"name": "ops", "url": receiver.url, "events": ["key.created"],
                                           "secret_env": "BM_TEST_YAML_SECRET"}])
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", fake.url)], webhooks=section,
                                   admin={"key_env": "BM_TEST_ADMIN_KEY"})
    from proxy.cli.accounts import create_user_and_key

    user_id, _ = create_user_and_key(harness.db_settings, "t@example.com", "correct horse battery", "test", "k",
                                     bcrypt_rounds=4)
    env = {**os.environ, "BM_TEST_WEBHOOK_KEY": ENCRYPTION_KEY, "BM_TEST_ADMIN_KEY": ADMIN_KEY,
           "BM_TEST_YAML_SECRET": YAML_SECRET}
    port = free_port()
    proc = await serve_process(harness.config_dir, port, env=env)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/api/keys", json={"name": "ci", "user_id": user_id},
                                    headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
                assert resp.status == 201, await resp.text()
        first = (await receiver.wait_for(1))[0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert _delivery_state(harness.db_path) == [("pending", "key.created")]
        receiver.hold.set()
        proc = await serve_process(harness.config_dir, port, env=env)
        second = (await receiver.wait_for(2))[1]
        assert second.headers["webhook-id"] == first.headers["webhook-id"]
        assert verify(YAML_SECRET, second)["type"] == "key.created"
        for _ in range(200):  # the outcome's write follows the answer
            if _delivery_state(harness.db_path) == [("succeeded", "key.created")]:
                break
            await asyncio.sleep(0.02)
        assert _delivery_state(harness.db_path) == [("succeeded", "key.created")]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        await receiver.stop()
        await fake.stop()
