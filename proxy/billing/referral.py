"""Referral codes: every account has one (a trigger gives it at insert, see tables.py);
a signup that names one records who referred it, once, and both accounts get the
configured bonus of included tokens in the month of the signup."""

from __future__ import annotations

import re
import sqlite3

from ..errors import InvalidRequest

_CODE = re.compile(r"^[a-z0-9]{4,32}$")


def normalize_code(raw: str, *, param: str = "ref") -> str:
    code = raw.strip().lower()
    if not _CODE.match(code):
        raise InvalidRequest("The referral code has the wrong format; copy it from the referral link "
                             "(letters and digits).", param=param, code="invalid_referral_code")
    return code


def code_of(conn: sqlite3.Connection, account_id: int) -> str | None:
    row = conn.execute("SELECT code FROM referral_codes WHERE account_id = ?", (account_id,)).fetchone()
    return row[0] if row else None


def referrer_of_code(conn: sqlite3.Connection, code: str) -> int | None:
    row = conn.execute("SELECT account_id FROM referral_codes WHERE code = ?", (code,)).fetchone()
    return row[0] if row else None


def record_referral(conn: sqlite3.Connection, referred_id: int, code: str, *, now: float,
                    reward_tokens: int) -> bool:
    """In the signup's transaction: True if recorded. An unknown code, the account's own
    code, or an account already referred records nothing."""
    referrer = referrer_of_code(conn, code)
    if referrer is None or referrer == referred_id:
        return False
    cur = conn.execute("INSERT INTO referrals (referred_id, referrer_id, at, reward_tokens) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (referred_id) DO NOTHING", (referred_id, referrer, now, reward_tokens))
    return cur.rowcount == 1


def referral_summary(conn: sqlite3.Connection, account_id: int) -> dict:
    (count, tokens) = conn.execute("SELECT COUNT(*), COALESCE(SUM(reward_tokens), 0) FROM referrals "
                                   "WHERE referrer_id = ?", (account_id,)).fetchone()
    by = conn.execute("SELECT referrer_id FROM referrals WHERE referred_id = ?", (account_id,)).fetchone()
    return {"code": code_of(conn, account_id), "referred_accounts": count, "reward_tokens_earned": tokens,
            "referred_by": by[0] if by else None}
