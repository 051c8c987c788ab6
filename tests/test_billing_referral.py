"""Referral codes: every account has one; ?ref=CODE on signup records the referrer once,
rewards both accounts with bonus included tokens, and never applies to an existing address."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.billing.referral import record_referral
from proxy.fake_upstream import start_fake_upstream
from proxy.store import Database

from .billing_support import PASSWORD, Clock, login, query, start_gateway, ts

NOW = ts("2026-03-10T12:00")


@pytest.fixture
async def gw(tmp_path, monkeypatch):
    upstream = await start_fake_upstream(name="u")
    harness = await start_gateway(tmp_path, monkeypatch, upstream.url, Clock(NOW), creem=None,
                                  auth={"signup": "open", "bcrypt_rounds": 4, "default_plan": "pro"},
                                  billing={"referral": {"reward_tokens": 5000}})
    async with aiohttp.ClientSession() as session:
        harness.session = session
        yield harness
    await harness.stop()
    await upstream.stop()


def code_of(gw, account_id: int) -> str:
    return query(gw.db_path, "SELECT code FROM referral_codes WHERE account_id = ?", (account_id,))[0][0]


async def signup(gw, email: str, *, query_ref: str | None = None, body_ref: str | None = None) -> tuple[int, dict]:
    body = {"email": email, "password": PASSWORD}
    if body_ref is not None:
        body["ref"] = body_ref
    url = gw.url + "/api/auth/signup" + (f"?ref={query_ref}" if query_ref is not None else "")
    async with gw.session.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_every_account_has_a_referral_code(gw):
    rows = query(gw.db_path, "SELECT u.id, r.code FROM users u LEFT JOIN referral_codes r ON r.account_id = u.id")
    assert rows and all(code is not None and len(code) == 12 for _, code in rows)


async def test_a_signup_through_a_referral_link_rewards_both_accounts_once(gw):
    code = code_of(gw, gw.user_id)
    assert (await signup(gw, "new@example.com", query_ref=code))[0] == 202
    [(referred,)] = query(gw.db_path, "SELECT id FROM users WHERE email = 'new@example.com'")
    assert query(gw.db_path, "SELECT referred_id, referrer_id, reward_tokens FROM referrals") == [
        (referred, gw.user_id, 5000)]
    assert (await signup(gw, "body@example.com", body_ref=code.upper()))[0] == 202  # the dashboard's form field
    assert len(query(gw.db_path, "SELECT 1 FROM referrals")) == 2
    headers = await login(gw.session, gw, "new@example.com")
    async with gw.session.get(gw.url + "/api/billing/plan", headers=headers) as resp:
        view = await resp.json()
    # pro includes 1000 tokens a month, prorated to 22 of 31 days (709), plus the 5000 bonus.
    assert view["usage"]["included_tokens"] == 5709
    assert view["referral"]["referred_by"] == gw.user_id
    tenant = await login(gw.session, gw, "tenant@example.com")
    async with gw.session.get(gw.url + "/api/billing/plan", headers=tenant) as resp:
        mine = await resp.json()
    assert mine["referral"] == {"code": code, "referred_accounts": 2, "reward_tokens_earned": 10000,
                                "referred_by": None}
    assert mine["usage"]["included_tokens"] == 10000  # the "test" plan includes none of its own


async def test_a_referral_for_an_existing_address_changes_nothing(gw):
    other_code = code_of(gw, gw.user_id)
    assert (await signup(gw, "first@example.com"))[0] == 202
    status, body = await signup(gw, "first@example.com", query_ref=other_code)  # answers as a new address does
    assert status == 202 and body["object"] == "signup"
    assert query(gw.db_path, "SELECT COUNT(*) FROM referrals") == [(0,)]
    # …and so does the tenant signing up "again" with their own code.
    assert (await signup(gw, "tenant@example.com", query_ref=other_code))[0] == 202
    assert query(gw.db_path, "SELECT COUNT(*) FROM referrals") == [(0,)]


async def test_a_malformed_referral_code_is_a_400_and_an_unknown_one_is_ignored(gw):
    status, body = await signup(gw, "x@example.com", query_ref="no spaces!")
    assert status == 400 and body["error"]["code"] == "invalid_referral_code" and body["error"]["param"] == "ref"
    assert query(gw.db_path, "SELECT COUNT(*) FROM users WHERE email = 'x@example.com'") == [(0,)]
    assert (await signup(gw, "y@example.com", query_ref="abcdef123456"))[0] == 202
    assert query(gw.db_path, "SELECT COUNT(*) FROM referrals") == [(0,)]


async def test_self_referral_and_a_second_referral_are_refused(tmp_path):
    db = Database(str(tmp_path / "r.db"))
    db.open_sync()
    ids = db.write_sync(lambda conn: [conn.execute(
        "INSERT INTO users (email, password_hash, plan, created_at, updated_at) VALUES (?, 'x', 'p', 0, 0) "
        "RETURNING id", (f"{n}@example.com",)).fetchone()[0] for n in ("a", "b", "c")])
    a, b, c = ids
    code = {acc: code for acc, code in db.read_sync(lambda conn: conn.execute(
        "SELECT account_id, code FROM referral_codes").fetchall())}
    assert db.write_sync(lambda conn: record_referral(conn, a, code[a], now=1, reward_tokens=10)) is False
    assert db.write_sync(lambda conn: record_referral(conn, b, code[a], now=1, reward_tokens=10)) is True
    assert db.write_sync(lambda conn: record_referral(conn, b, code[c], now=2, reward_tokens=10)) is False
    assert [tuple(r) for r in db.read_sync(lambda conn: conn.execute(
        "SELECT referred_id, referrer_id FROM referrals").fetchall())] == [(b, a)]
    db.close_sync()
