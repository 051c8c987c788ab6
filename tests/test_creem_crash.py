"""A real gateway process killed with SIGKILL after a Creem event committed but before
it answered; Creem redelivers to the restarted gateway, and the payment counts once."""

from __future__ import annotations

import os
import signal
import textwrap

import aiohttp

from proxy.billing.fake_creem import checkout_completed, signed
from proxy.cli.accounts import create_user_and_key

from .billing_support import (
    CREEM_KEY,
    CREEM_KEY_ENV,
    CREEM_SECRET,
    CREEM_SECRET_ENV,
    PASSWORD,
    PLANS,
    billing_section,
)
from .db_access import query, store_at
from .gateway_harness import GatewayHarness, serve_process, upstream_entry
from .litellm_process import free_port

# The child serves exactly as `bluesminds serve`, except that the store's write_once
# kills the process the moment a Creem event's transaction has committed: the
# narrowest window there is between the commit and the reply.
_KILLING_SERVE = textwrap.dedent("""
    import os, signal, sys
    from proxy.store.database import Database
    def killing(original):
        async def write_once(self, key, fn):
            ran = await original(self, key, fn)
            if key.startswith("creem:"):
                os.kill(os.getpid(), signal.SIGKILL)
            return ran
        return write_once
    Database.write_once = killing(Database.write_once)
    if os.environ.get("BLUESMINDS_DATABASE_URL"):
        from proxy.store.postgres import PostgresStore
        PostgresStore.write_once = killing(PostgresStore.write_once)
    from proxy.cli import main
    main(sys.argv[1:])
""")


async def test_kill_9_between_commit_and_reply_then_redelivery_credits_once(tmp_path):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("u", "http://127.0.0.1:9")],
                                   plans=PLANS, billing=billing_section("http://127.0.0.1:9"))
    user_id, _ = create_user_and_key(harness.db_settings, "tenant@example.com", PASSWORD, "test", "k", bcrypt_rounds=4)
    db = store_at(harness.db_path)
    db.open_sync()
    db.write_sync(lambda conn: conn.execute(
        "INSERT INTO billing_orders (id, account_id, plan, product_id, amount_minor, currency, status, created_at) "
        "VALUES ('bmo_1', ?, 'pro', 'prod_pro', 3000, 'USD', 'open', 0)", (user_id,)))
    db.close_sync()
    made = {"id": "ch_1", "request_id": "bmo_1", "product": "prod_pro",
            "metadata": {"bm_order_id": "bmo_1", "account_id": str(user_id)}}
    raw, headers = signed(checkout_completed(made, amount=3000, currency="USD", created_at=1_773_000_000_000),
                          CREEM_SECRET)
    env = {**os.environ, CREEM_KEY_ENV: CREEM_KEY, CREEM_SECRET_ENV: CREEM_SECRET, "BM_CONFIG": harness.config_dir}
    port = free_port()
    proc = await serve_process(env["BM_CONFIG"], port, env=env, python_args=("-c", _KILLING_SERVE))
    try:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(f"http://127.0.0.1:{port}/api/billing/webhooks/creem", data=raw,
                                        headers=headers) as resp:
                    raise AssertionError(f"answered {resp.status}; it should have died first")
            except aiohttp.ClientConnectionError:
                pass  # Creem sees no answer, and will deliver again
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The effect and the record of the event committed together before the kill.
    assert query(harness.db_path, "SELECT kind, creem_ref, amount_minor FROM billing_payments") == [
        ("charge", "tran_1", 3000)]

    restarted = await serve_process(env["BM_CONFIG"], port, env=env)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/api/billing/webhooks/creem", data=raw,
                                    headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["duplicate"] is True
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    assert query(harness.db_path, "SELECT kind, creem_ref, amount_minor FROM billing_payments") == [
        ("charge", "tran_1", 3000)]
    assert query(harness.db_path, "SELECT plan FROM users WHERE id = ?", (user_id,)) == [("pro",)]
    assert query(harness.db_path, "SELECT COUNT(*) FROM webhook_events WHERE type = 'payment.succeeded'") == [(1,)]
