"""Schema of billing: plan history, invoices and their numbering, orders, payments,
subscriptions, referral codes. Applied by the store (listed in proxy/store/migrations.py).

Money columns are integers: `*_minor` in the currency's minor unit (cents) on
invoice lines and payments, `cost_nano` in nano-dollars for usage figures.
"""

from __future__ import annotations

import sqlite_utils

migrations = sqlite_utils.Migrations("bluesminds.billing")

# SQLite 3.40 has no unixepoch('subsec'); this is the same number.
_NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"


@migrations(name="001_billing")
def _billing(db: sqlite_utils.Database) -> None:
    for statement in (
        # Every change of an account's plan, with its time: what proration is computed from.
        """CREATE TABLE billing_plan_changes (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL,
            at REAL NOT NULL,
            from_plan TEXT,
            to_plan TEXT NOT NULL,
            source TEXT NOT NULL
        )""",
        "CREATE INDEX billing_plan_changes_account ON billing_plan_changes (account_id, at)",
        # A plan changed by any other writer (the admin API, the CLI) is recorded too, at
        # the wall clock; billing's own changes record theirs first, with the injected clock,
        # and the trigger sees the latest record already names the new plan.
        f"""CREATE TRIGGER billing_plan_change_logged AFTER UPDATE OF plan ON users
            WHEN OLD.plan IS NOT NEW.plan AND NEW.plan IS NOT (
                SELECT to_plan FROM billing_plan_changes WHERE account_id = NEW.id
                ORDER BY id DESC LIMIT 1)
            BEGIN
                INSERT INTO billing_plan_changes (account_id, at, from_plan, to_plan, source)
                VALUES (NEW.id, {_NOW_SQL}, OLD.plan, NEW.plan, 'account');
            END""",
        """CREATE TABLE invoices (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL,
            month TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('draft', 'final')),
            number TEXT UNIQUE,
            currency TEXT NOT NULL,
            total_minor INTEGER NOT NULL,
            plan TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finalized_at REAL,
            UNIQUE (account_id, month),
            CHECK ((status = 'final') = (number IS NOT NULL))
        )""",
        "CREATE INDEX invoices_month ON invoices (month, status)",
        """CREATE TABLE invoice_lines (
            invoice_id INTEGER NOT NULL REFERENCES invoices(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('fee', 'usage', 'included', 'adjustment')),
            description TEXT NOT NULL,
            model TEXT,
            usage_month TEXT,
            days INTEGER,
            requests INTEGER,
            tokens INTEGER,
            unit_price TEXT,
            cost_nano INTEGER,
            amount_minor INTEGER NOT NULL,
            PRIMARY KEY (invoice_id, position)
        ) WITHOUT ROWID""",
        # One row: the last invoice number given. Taken and bumped in the transaction that
        # finalizes, so numbers are unique and have no gaps.
        "CREATE TABLE invoice_numbers (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL)",
        "INSERT INTO invoice_numbers (id, last) VALUES (1, 0)",
        # What final invoices have billed of each account × usage month × model so far:
        # usage that reaches a finalized month later is the difference, billed next time.
        """CREATE TABLE billed_usage (
            account_id INTEGER NOT NULL,
            usage_month TEXT NOT NULL,
            model TEXT NOT NULL,
            requests INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            cost_nano INTEGER NOT NULL,
            PRIMARY KEY (account_id, usage_month, model)
        ) WITHOUT ROWID""",
        """CREATE TABLE billing_orders (
            id TEXT PRIMARY KEY,
            account_id INTEGER NOT NULL,
            plan TEXT NOT NULL,
            product_id TEXT NOT NULL,
            amount_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'completed')),
            checkout_id TEXT,
            checkout_url TEXT,
            created_at REAL NOT NULL,
            completed_at REAL
        )""",
        "CREATE INDEX billing_orders_account ON billing_orders (account_id, created_at)",
        """CREATE TABLE billing_subscriptions (
            id TEXT PRIMARY KEY,
            account_id INTEGER NOT NULL,
            plan TEXT NOT NULL,
            product_id TEXT NOT NULL,
            status TEXT NOT NULL,
            period_start REAL,
            period_end REAL,
            last_event_at INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX billing_subscriptions_account ON billing_subscriptions (account_id, updated_at)",
        # A charge is keyed by Creem's transaction: checkout.completed and subscription.paid
        # both announce the first one, and it is one charge.
        """CREATE TABLE billing_payments (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('charge', 'refund')),
            creem_ref TEXT NOT NULL,
            transaction_ref TEXT,
            order_id TEXT,
            subscription_id TEXT,
            amount_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            refunded_minor INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            event_id TEXT NOT NULL,
            UNIQUE (kind, creem_ref)
        )""",
        "CREATE INDEX billing_payments_account ON billing_payments (account_id, created_at)",
        """CREATE TABLE referral_codes (
            account_id INTEGER PRIMARY KEY,
            code TEXT NOT NULL UNIQUE
        )""",
        # Every account has a code from the moment it exists, whoever created it.
        """CREATE TRIGGER referral_code_for_new_account AFTER INSERT ON users
            BEGIN
                INSERT INTO referral_codes (account_id, code) VALUES (NEW.id, lower(hex(randomblob(6))));
            END""",
        "INSERT INTO referral_codes (account_id, code) SELECT id, lower(hex(randomblob(6))) FROM users",
        # One row per referred account: the reward is applied once by construction.
        """CREATE TABLE referrals (
            referred_id INTEGER PRIMARY KEY,
            referrer_id INTEGER NOT NULL,
            at REAL NOT NULL,
            reward_tokens INTEGER NOT NULL,
            CHECK (referred_id != referrer_id)
        )""",
        "CREATE INDEX referrals_referrer ON referrals (referrer_id, at)",
    ):
        db.execute(statement)
