"""Invoices: exact amounts, one per account and month, numbers without gaps, proration,
late usage, draft then final; through the admin route, the CLI and the in-process job."""

from __future__ import annotations

import asyncio
import random
import threading
from decimal import ROUND_HALF_UP, Decimal

import aiohttp
import pytest
from click.testing import CliRunner

from proxy.appkeys import USAGE
from proxy.billing.invoices import generate
from proxy.billing.plans import Month, change_plan
from proxy.cli import main
from proxy.config.build import load_config
from proxy.fake_upstream import start_fake_upstream
from proxy.store import Database

from .billing_support import (
    Clock,
    add_account,
    admin,
    login,
    query,
    start_gateway,
    ts,
    usage_row,
)
from .db_access import on_postgres, opened, store_at
from .gateway_harness import GatewayHarness, upstream_entry

MARCH_10 = ts("2026-03-10T12:00")
APRIL_10 = ts("2026-04-10T12:00")  # past March's end plus the 3-day grace


@pytest.fixture
async def upstream():
    fake = await start_fake_upstream(name="u")
    yield fake
    await fake.stop()


@pytest.fixture
async def gateway(tmp_path, monkeypatch, upstream):
    clock = Clock(MARCH_10)
    harness = await start_gateway(tmp_path, monkeypatch, upstream.url, clock, creem=None)
    harness.clock = clock
    yield harness
    await harness.stop()


async def _rows(harness: GatewayHarness, expected: int) -> int:
    for _ in range(400):  # the recorder flushes every 50 ms; bounded wait for it
        (count,) = query(harness.db_path, "SELECT COUNT(*) FROM usage")[0]
        if count >= expected:
            return count
        await asyncio.sleep(0.025)
    raise AssertionError(f"{count} usage rows, expected {expected}")


async def _generate(session, harness, month: str) -> dict:
    async with session.post(harness.url + "/api/admin/invoices/generate", json={"month": month},
                            headers=admin()) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_invoice_equals_the_exact_sum_of_10000_small_requests(gateway):
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4}
    async with aiohttp.ClientSession() as session:
        for _ in range(40):  # through the real gateway: priced and recorded by the pipeline
            async with session.post(gateway.url + "/v1/chat/completions", json=chat,
                                    headers=gateway.headers()) as resp:
                assert resp.status == 200
        await _rows(gateway, 40)
        rnd = random.Random(5)
        pricing = gateway.app[CONFIG_KEY()].current.models["gpt-4o-mini"].pricing
        for i in range(10_000 - 40):  # the rest straight into the same recorder
            prompt, completion = rnd.randrange(1, 30), rnd.randrange(0, 12)
            gateway.app[USAGE].record(usage_row(MARCH_10 + i, gateway.user_id, "gpt-4o-mini", prompt, completion,
                                                pricing.cost_nano(prompt, completion), request_id=f"d{i}"))
        await _rows(gateway, 10_000)
        gateway.clock.now = APRIL_10
        result = await _generate(session, gateway, "2026-03")
        assert result == {"object": "invoice.generation", "month": "2026-03", "status": "final",
                          "drafted": 0, "finalized": 1, "unchanged": 0}
        headers = await login(session, gateway, "tenant@example.com")
        async with session.get(gateway.url + "/api/billing/invoices", headers=headers) as resp:
            [listed] = (await resp.json())["data"]
        async with session.get(gateway.url + f"/api/billing/invoices/{listed['id']}", headers=headers) as resp:
            invoice = await resp.json()
    rows = query(gateway.db_path, "SELECT prompt_tokens, completion_tokens, cost_nano FROM usage")
    assert len(rows) == 10_000
    # The reference: each token at its decimal price, no float anywhere, one rounding at the end.
    exact = sum(Decimal(p) * Decimal("0.15") + Decimal(c) * Decimal("0.6") for p, c, _ in rows) / 10**6
    assert sum(r[2] for r in rows) == exact * 10**9  # every row's integer cost is exact
    [line] = invoice["lines"]
    assert line["kind"] == "usage" and line["model"] == "gpt-4o-mini" and line["requests"] == 10_000
    assert Decimal(line["cost_usd"]) == exact
    assert line["amount"] == str(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    assert invoice["total"] == line["amount"] and invoice["status"] == "final"
    assert invoice["number"] == "BM-000001" and invoice["month"] == "2026-03"
    assert line["unit_price"] == {"input_per_1m": "0.15", "output_per_1m": "0.6"}


def CONFIG_KEY():
    from proxy.appkeys import CONFIG
    return CONFIG


async def test_generating_twice_makes_one_invoice_by_route_cli_and_job(gateway):
    other = add_account(gateway, "other@example.com", "basic", gateway.clock)
    gateway.clock.now = APRIL_10
    async with aiohttp.ClientSession() as session:
        first = await _generate(session, gateway, "2026-03")
        second = await _generate(session, gateway, "2026-03")
    assert (first["finalized"], second["finalized"], second["unchanged"]) == (2, 0, 2)
    result = CliRunner().invoke(main, ["invoices", "generate", "--config", gateway.config_dir, "--month", "2026-03"])
    assert result.exit_code == 0, result.output
    assert "2026-03: 0 finalized, 0 drafted, 2 already final" in result.output
    assert query(gateway.db_path, "SELECT account_id, number, total_minor FROM invoices ORDER BY account_id") == [
        (gateway.user_id, "BM-000001", 0),
        (other, "BM-000002", 710)]  # created on 10 March: 22 of 31 days of $10 = 7.096… → 7.10
    assert query(gateway.db_path, "SELECT COUNT(*) FROM webhook_events WHERE type = 'invoice.finalized'") == [(2,)]


async def test_the_job_in_the_gateway_finalizes_last_month_by_the_injected_clock(tmp_path, monkeypatch, upstream):
    clock = Clock(APRIL_10)
    harness = GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("u", upstream.url)])
    from proxy.cli.accounts import create_user_and_key
    create_user_and_key(harness.db_settings, "early@example.com", "correct horse battery", "test", "k",
                        bcrypt_rounds=4, clock=lambda: MARCH_10)
    await harness.start(clock=clock)
    try:
        for _ in range(200):  # the job runs at start-up; bounded wait for its transaction
            got = query(harness.db_path, "SELECT month, status, number FROM invoices")
            if got:
                break
            await asyncio.sleep(0.025)
        # The harness's own tenant was created at the real time: it is not billed for March.
        assert got == [("2026-03", "final", "BM-000001")]
    finally:
        await harness.stop()


def _snapshot(tmp_path, plans=None):
    from .billing_support import PLANS, billing_section
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", "http://127.0.0.1:9")],
                                   plans=plans or PLANS, billing=billing_section(None))
    return harness, load_config(harness.config_dir)


def _accounts(db: Database, n: int, plan: str, created: float) -> list[int]:
    def insert(conn):
        return [conn.execute("INSERT INTO users (email, password_hash, plan, created_at, updated_at) "
                             "VALUES (?, 'x', ?, ?, ?) RETURNING id", (f"a{i}@example.com", plan, created, created)
                             ).fetchone()[0] for i in range(n)]
    return db.write_sync(insert)


async def test_numbers_have_no_gaps_when_generators_race(tmp_path):
    harness, snapshot = _snapshot(tmp_path)
    db = store_at(harness.db_path)
    await db.open()
    ids = _accounts(db, 40, "basic", MARCH_10)
    march = Month.parse("2026-03")
    # A second writer on the same file, as the CLI beside a running gateway would be.
    other = store_at(harness.db_path)
    other.open_sync()
    cli_results = []
    thread = threading.Thread(target=lambda: cli_results.append(
        other.write_sync(lambda conn: generate(conn, snapshot, march, now=APRIL_10))))
    thread.start()
    results = await asyncio.gather(*[db.write(lambda conn: generate(conn, snapshot, march, now=APRIL_10))
                                     for _ in range(6)])
    thread.join(timeout=60)
    other.close_sync()
    await db.close()
    assert sum(r.finalized for r in results + cli_results) == 40
    numbers = query(harness.db_path, "SELECT number FROM invoices ORDER BY number")
    assert [n for (n,) in numbers] == [f"BM-{i:06d}" for i in range(1, 41)]
    assert query(harness.db_path, "SELECT last FROM invoice_numbers") == [(40,)]
    assert sorted(a for (a,) in query(harness.db_path, "SELECT account_id FROM invoices")) == ids


async def test_a_generator_that_waits_for_a_concurrent_one_sees_its_invoices_final(tmp_path):
    """Two generators on one PostgreSQL database (two workers, or the CLI beside the
    gateway): the second reaches the database while the first holds its transaction
    open, and must find the month final once it may go on, not fail on the invoices
    the first finalized after the second began. (SQLite's writers take turns on the
    file lock before they read anything: this interleaving cannot happen there.)"""
    if not on_postgres():
        pytest.skip("PostgreSQL only: concurrent write transactions")
    harness, snapshot = _snapshot(tmp_path)
    first, second = store_at(harness.db_path), store_at(harness.db_path)
    first.open_sync()
    await second.open()
    ids = _accounts(first, 5, "basic", MARCH_10)
    march = Month.parse("2026-03")
    generated, release = threading.Event(), threading.Event()

    def first_generator(conn):
        result = generate(conn, snapshot, march, now=APRIL_10)
        generated.set()
        assert release.wait(60)  # commit only once the second generator waits on this one
        return result

    first_results: list = []
    thread = threading.Thread(target=lambda: first_results.append(first.write_sync(first_generator)))
    thread.start()
    try:
        assert await asyncio.to_thread(generated.wait, 60)
        waiting = asyncio.ensure_future(second.write(lambda conn: generate(conn, snapshot, march, now=APRIL_10)))
        with opened(harness.db_path) as observer:
            for _ in range(2400):  # until the second generator's transaction waits on a lock the first holds
                if observer.read_sync(lambda conn: conn.execute(
                        "SELECT COUNT(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'").fetchone()[0]):
                    break
                assert not waiting.done(), waiting.result()
                await asyncio.sleep(0.025)
            else:
                raise AssertionError("the second generator never waited for the first")
    finally:
        release.set()
        await asyncio.to_thread(thread.join, 60)
    result = await waiting
    first.close_sync()
    await second.close()
    assert first_results[0].finalized == 5
    assert (result.finalized, result.unchanged) == (0, 5)
    numbers = query(harness.db_path, "SELECT number FROM invoices ORDER BY number")
    assert [n for (n,) in numbers] == [f"BM-{i:06d}" for i in range(1, 6)]
    assert query(harness.db_path, "SELECT last FROM invoice_numbers") == [(5,)]
    assert sorted(a for (a,) in query(harness.db_path, "SELECT account_id FROM invoices")) == ids


async def test_a_mid_month_plan_change_is_prorated_by_days(tmp_path):
    harness, snapshot = _snapshot(tmp_path)
    db = store_at(harness.db_path)
    await db.open()
    [account] = _accounts(db, 1, "basic", ts("2026-10-20T00:00"))
    # November has 30 days: basic ($10) for days 1-10, pro ($30) from the 11th, at 15:00.
    await db.write(lambda conn: change_plan(conn, account, "pro", now=ts("2026-11-11T15:00"), source="test"))
    result = await db.write(lambda conn: generate(conn, snapshot, Month.parse("2026-11"), now=ts("2026-12-05T00:00")))
    await db.close()
    assert result.finalized == 1
    lines = query(harness.db_path, "SELECT kind, description, days, amount_minor FROM invoice_lines ORDER BY position")
    assert lines == [
        ("fee", "basic plan, 10 of 30 days from 2026-11-01", 10, 333),   # 10 × 10 / 30 = 3.333… → 3.33
        ("fee", "pro plan, 20 of 30 days from 2026-11-11", 20, 2000),     # 30 × 20 / 30 = 20.00
    ]
    assert query(harness.db_path, "SELECT plan, total_minor FROM invoices") == [("pro", 2333)]


async def test_a_plan_changed_by_the_admin_route_is_recorded_for_proration(tmp_path):
    harness, snapshot = _snapshot(tmp_path)
    db = store_at(harness.db_path)
    await db.open()
    [account] = _accounts(db, 1, "basic", MARCH_10)
    # Any writer that changes users.plan (the admin API, the CLI) is logged by the trigger.
    await db.write(lambda conn: conn.execute("UPDATE users SET plan = 'pro' WHERE id = ?", (account,)))
    await db.close()
    [(from_plan, to_plan, source)] = query(harness.db_path,
                                           "SELECT from_plan, to_plan, source FROM billing_plan_changes")
    assert (from_plan, to_plan, source) == ("basic", "pro", "account")


async def test_late_usage_goes_onto_the_next_invoice_as_an_adjustment(tmp_path):
    from proxy.usage import write_batch
    harness, snapshot = _snapshot(tmp_path)
    db = store_at(harness.db_path)
    await db.open()
    [account] = _accounts(db, 1, "test", ts("2026-02-01T00:00"))
    await db.write(lambda conn: write_batch(conn, [usage_row(MARCH_10, account, "gpt-4o-mini", 100, 0, 15_000_000)]))
    march, april = Month.parse("2026-03"), Month.parse("2026-04")
    await db.write(lambda conn: generate(conn, snapshot, march, now=APRIL_10))
    # A row stamped in March arrives after March was finalized (a spill imported at restart).
    await db.write(lambda conn: write_batch(conn, [usage_row(MARCH_10 + 60, account, "gpt-4o-mini", 40, 0,
                                                             6_000_000)]))
    await db.write(lambda conn: generate(conn, snapshot, march, now=APRIL_10 + 1))  # March stays as it was
    await db.write(lambda conn: generate(conn, snapshot, april, now=ts("2026-05-10T00:00")))
    await db.write(lambda conn: generate(conn, snapshot, april, now=ts("2026-05-11T00:00")))
    may = Month.parse("2026-05")
    await db.write(lambda conn: generate(conn, snapshot, may, now=ts("2026-06-10T00:00")))
    await db.close()
    rows = query(harness.db_path, "SELECT i.month, l.kind, l.usage_month, l.requests, l.tokens, l.cost_nano, "
                                  "l.amount_minor FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
                                  "ORDER BY i.month, l.position")
    assert rows == [
        ("2026-03", "usage", "2026-03", 1, 100, 15_000_000, 2),       # $0.015 → $0.02
        ("2026-04", "adjustment", "2026-03", 1, 40, 6_000_000, 1),    # the late row, once: $0.006 → $0.01
    ]  # May carries nothing: the late row was billed once


async def test_a_month_is_draft_until_the_grace_period_ends(tmp_path):
    harness, snapshot = _snapshot(tmp_path)
    db = store_at(harness.db_path)
    await db.open()
    _accounts(db, 2, "basic", MARCH_10)
    march = Month.parse("2026-03")
    drafted = await db.write(lambda conn: generate(conn, snapshot, march, now=ts("2026-04-03T23:59")))
    assert (drafted.status, drafted.drafted) == ("draft", 2)
    assert query(harness.db_path, "SELECT status, number FROM invoices") == [("draft", None), ("draft", None)]
    final = await db.write(lambda conn: generate(conn, snapshot, march, now=ts("2026-04-04T00:00")))
    await db.close()
    assert (final.status, final.finalized) == ("final", 2)
    assert query(harness.db_path, "SELECT status, number FROM invoices ORDER BY id") == [
        ("final", "BM-000001"), ("final", "BM-000002")]


async def test_included_tokens_are_credited_at_the_months_average_price(tmp_path):
    from proxy.usage import write_batch
    harness, snapshot = _snapshot(tmp_path)
    db = store_at(harness.db_path)
    await db.open()
    [account] = _accounts(db, 1, "pro", ts("2026-02-01T00:00"))  # $30, 1000 tokens included
    await db.write(lambda conn: write_batch(conn, [
        usage_row(MARCH_10, account, "gpt-4o-mini", 1500, 500, 3_000_000_000),  # 2000 tokens, $3.00
        usage_row(MARCH_10, account, "text-embedding-3-small", 2000, 0, 1_000_000_000)]))  # 2000 tokens, $1.00
    await db.write(lambda conn: generate(conn, snapshot, Month.parse("2026-03"), now=APRIL_10))
    await db.close()
    assert query(harness.db_path, "SELECT kind, model, tokens, amount_minor FROM invoice_lines ORDER BY position") == [
        ("fee", None, None, 3000),
        ("usage", "gpt-4o-mini", 2000, 300),
        ("usage", "text-embedding-3-small", 2000, 100),
        ("included", None, 1000, -100),  # 1000 of 4000 tokens: a quarter of $4.00
    ]
    assert query(harness.db_path, "SELECT total_minor FROM invoices") == [(3300,)]


async def test_a_tenant_sees_only_their_own_invoices_and_the_admin_sees_all(gateway):
    other = add_account(gateway, "other@example.com", "basic", gateway.clock)
    gateway.clock.now = APRIL_10
    async with aiohttp.ClientSession() as session:
        await _generate(session, gateway, "2026-03")
        [(theirs,)] = query(gateway.db_path, "SELECT id FROM invoices WHERE account_id = ?", (other,))
        mine = await login(session, gateway, "tenant@example.com")
        async with session.get(gateway.url + f"/api/billing/invoices/{theirs}", headers=mine) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "invoice_not_found"
        async with session.get(gateway.url + "/api/billing/invoices/999999", headers=mine) as resp:
            assert resp.status == 404
        async with session.get(gateway.url + "/api/billing/invoices", headers=mine) as resp:
            assert [i["account_id"] for i in (await resp.json())["data"]] == [gateway.user_id]
        async with session.get(gateway.url + f"/api/billing/invoices/{theirs}", headers=admin()) as resp:
            assert resp.status == 200 and (await resp.json())["total"] == "7.10"
        async with session.get(gateway.url + "/api/admin/invoices?month=2026-03", headers=admin()) as resp:
            assert len((await resp.json())["data"]) == 2
        async with session.get(gateway.url + "/api/admin/invoices", headers=mine) as resp:
            assert resp.status == 403
        async with session.get(gateway.url + "/api/admin/invoices?limit=1000", headers=admin()) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["param"] == "limit"
        async with session.post(gateway.url + "/api/admin/invoices/generate", json={"month": "2026-13"},
                                headers=admin()) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["param"] == "month"


async def test_the_plan_route_shows_usage_against_the_plan_and_an_estimate(gateway):
    account = add_account(gateway, "pro@example.com", "pro", gateway.clock)
    gateway.app[USAGE].record(usage_row(MARCH_10, account, "gpt-4o-mini", 300, 100, 105_000))
    await _rows(gateway, 1)
    async with aiohttp.ClientSession() as session:
        headers = await login(session, gateway, "pro@example.com")
        async with session.get(gateway.url + "/api/billing/plan", headers=headers) as resp:
            assert resp.status == 200
            view = await resp.json()
        async with session.get(gateway.url + "/api/billing/plan", headers=admin()) as resp:
            assert resp.status == 403  # the admin key has no account of its own
    assert view["plan"]["name"] == "pro" and view["plan"]["monthly_fee"] == "30.00"
    assert view["usage"] == {"month": "2026-03", "requests": 1, "tokens": 400, "cost_usd": "0.000105",
                             "included_tokens": 709, "included_tokens_left": 309, "tokens_per_month": None,
                             "requests_per_month": None, "monthly_budget_usd": None}
    # Created on 10 March: 22 of 31 days of $30 = 21.29; included tokens prorated to 709.
    assert [(l["kind"], l["amount"]) for l in view["estimate"]["lines"]] == [
        ("fee", "21.29"), ("usage", "0.00"), ("included", "0.00")]
    assert view["period"]["source"] == "calendar_month" and view["referral"]["code"]
