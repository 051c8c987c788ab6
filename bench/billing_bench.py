"""Invoice generation time for many accounts.

    python bench/billing_bench.py [--accounts 10000] [--days 30] [--db PATH]

Builds a database of --accounts accounts on three priced plans (a tenth of them
change plan mid-month), each with usage on 3 models over --days days of one
month (rows written through write_batch, so the rollups are the real ones),
then times, each in its one write transaction:
  1. drafting every invoice of the month (before the grace period ends),
  2. redrafting (the same again: drafts are replaced, not added),
  3. finalizing and numbering every invoice,
  4. generating again once final (the idempotent no-op),
  5. one account's estimate (what GET /api/billing/plan computes).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy.billing.invoices import bill_account, generate, load_month  # noqa: E402
from proxy.billing.money import to_nano  # noqa: E402
from proxy.billing.plans import Month, change_plan  # noqa: E402
from proxy.config.snapshot import (BillingSettings, DatabaseSettings, ModelConfig, PlanConfig,  # noqa: E402
                                   PlanPrice, Pricing, Snapshot, AdminSettings, AuthSettings, HealthSettings,
                                   RetrySettings, ServerSettings)
from proxy.store import Database  # noqa: E402
from proxy.usage import UsageRecord, write_batch  # noqa: E402

MONTH = Month(2026, 3)
MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


def snapshot() -> Snapshot:
    def pricing(i, o):
        return Pricing(input_nano=to_nano(i), output_nano=to_nano(o))
    models = {"gpt-4o-mini": ModelConfig("gpt-4o-mini", "gpt-4o-mini", pricing=pricing("0.15", "0.6")),
              "gpt-4o": ModelConfig("gpt-4o", "gpt-4o", pricing=pricing("2.5", "10")),
              "text-embedding-3-small": ModelConfig("text-embedding-3-small", "e", pricing=pricing("0.02", "0"))}
    plans = {"free": PlanConfig("free"),
             "basic": PlanConfig("basic", price=PlanPrice(monthly_fee_nano=to_nano(10), included_tokens=100_000)),
             "pro": PlanConfig("pro", price=PlanPrice(monthly_fee_nano=to_nano(30), included_tokens=1_000_000))}
    return Snapshot(server=ServerSettings(), database=DatabaseSettings(), admin=AdminSettings(),
                    auth=AuthSettings(default_plan="free"), health=HealthSettings(), retry=RetrySettings(),
                    upstreams=(), models=models, plans=plans, billing=BillingSettings())


def seed(db: Database, accounts: int, days: int, rnd: random.Random) -> int:
    created = MONTH.start - 86400

    def users(conn):
        conn.executemany("INSERT INTO users (email, password_hash, plan, created_at, updated_at) "
                         "VALUES (?, 'x', ?, ?, ?)",
                         [(f"u{i}@example.com", rnd.choice(("free", "basic", "pro")), created, created)
                          for i in range(accounts)])
        for account in range(1, accounts + 1, 10):
            change_plan(conn, account, "pro", now=MONTH.start + rnd.randrange(1, 28) * 86400 + 3600, source="bench")

    db.write_sync(users)
    rows = 0
    batch: list[UsageRecord] = []
    for account in range(1, accounts + 1):
        for day in range(days):
            for model in MODELS:
                prompt, completion = rnd.randrange(10, 2000), rnd.randrange(0, 500)
                batch.append(UsageRecord(ts=MONTH.start + day * 86400 + 100, request_id="r", user_id=account,
                                         key_id=None, route="chat", requested_model=model, served_model=model,
                                         upstream="u", status=200, error_type=None, prompt_tokens=prompt,
                                         completion_tokens=completion, total_tokens=prompt + completion,
                                         cost_nano=prompt * 150 + completion * 600, latency_ms=100.0))
        if len(batch) >= 20_000:
            db.write_sync(lambda conn, b=batch: write_batch(conn, b))
            rows += len(batch)
            batch = []
    db.write_sync(lambda conn: write_batch(conn, batch))
    return rows + len(batch)


def timed(label: str, fn) -> object:
    started = time.perf_counter()
    result = fn()
    print(f"  {label:<44} {time.perf_counter() - started:8.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--db")
    args = parser.parse_args()
    path = args.db or os.path.join(tempfile.mkdtemp(), "billing-bench.db")
    db = Database(path)
    db.open_sync()
    snap = snapshot()
    started = time.perf_counter()
    rows = seed(db, args.accounts, args.days, random.Random(1))
    print(f"{args.accounts} accounts, {rows} usage rows in {MONTH}, seeded in {time.perf_counter() - started:.1f}s")
    draft_at, final_at = MONTH.end + 3600, MONTH.end + 4 * 86400
    r = timed("draft every invoice", lambda: db.write_sync(lambda c: generate(c, snap, MONTH, now=draft_at)))
    assert r.drafted == args.accounts
    timed("redraft (drafts replaced)", lambda: db.write_sync(lambda c: generate(c, snap, MONTH, now=draft_at)))
    r = timed("finalize and number every invoice", lambda: db.write_sync(lambda c: generate(c, snap, MONTH,
                                                                                              now=final_at)))
    assert r.finalized == args.accounts
    r = timed("generate again once final (no-op)", lambda: db.write_sync(lambda c: generate(c, snap, MONTH,
                                                                                              now=final_at)))
    assert r.unchanged == args.accounts and not r.finalized

    def estimate():
        data = db.read_sync(lambda c: load_month(c, MONTH, account_id=args.accounts // 2))
        return bill_account(snap, data, data.accounts[0])
    timed("one account's estimate", estimate)
    (count, last) = db.read_sync(lambda c: c.execute("SELECT COUNT(*), MAX(number) FROM invoices").fetchone())
    print(f"{count} invoices, last number {last}")
    db.close_sync()


if __name__ == "__main__":
    main()
