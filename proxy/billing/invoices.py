"""A month's invoices: built from the daily rollups, drafted, then finalized and numbered.

One invoice per account and UTC month (`UNIQUE (account_id, month)`). Until
`billing.invoice_grace` after the month ends, generating refreshes a draft;
after it, generating finalizes: every account's invoice of the month gets the
next number in the one write transaction that makes it final, so numbers are
unique and have no gaps however many generators race (they take turns, from
before their first read: SQLite's writers do on its file lock, PostgreSQL's on
an advisory lock; the loser finds the invoices final and changes nothing).

Lines, each rounded once, half-up, to the currency's minor unit:

    fee         the plan's monthly fee, prorated by whole UTC days per plan held
    usage       per model: requests, tokens, the exact sum of the rows' costs
    included    minus the value of the included tokens used (the month's average
                price per token, so the credit never depends on which model came first)
    adjustment  usage that reached an already finalized month after it was
                finalized (a late spill import, a clock set back): billed here
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable

import orjson

from ..config.snapshot import PlanConfig, Snapshot
from ..webhooks.outbox import emit
from .money import minor_to_text, nano_to_minor, nano_to_text
from .plans import Month, Segment, segments

# PostgreSQL: the advisory lock every generator of every worker and the CLI holds
# for its whole transaction (proxy/store/postgres.py, PgConnection.take_turn).
GENERATE_LOCK = 0x626D696E  # "bmin"

# How many finalized months back late usage is looked for. Usage arrives late by
# minutes (a spill imported at restart), not by seasons.
LATE_USAGE_MONTHS = 3


@dataclass(slots=True)
class Line:
    kind: str
    description: str
    amount_minor: int
    model: str | None = None
    usage_month: str | None = None
    days: int | None = None
    requests: int | None = None
    tokens: int | None = None
    unit_price: dict[str, str] | None = None
    cost_nano: int | None = None


@dataclass(slots=True)
class Bill:
    account_id: int
    plan: str
    lines: list[Line]
    # (usage month, model) -> (requests, tokens, cost_nano) this bill charges for
    charged: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)
    included_tokens: int = 0  # the month's allowance: the plans' (prorated) plus referral bonuses

    @property
    def total_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)


@dataclass(slots=True)
class MonthData:
    """Everything the month's bills are computed from, read in a few set-wise queries."""

    month: Month
    accounts: list[tuple[int, str, float]]  # (id, current plan, created_at)
    changes: dict[int, list[tuple[float, str | None, str]]]
    usage: dict[int, list[tuple[str, int, int, int]]]  # (model, requests, tokens, cost_nano)
    late: dict[int, list[tuple[str, str, int, int, int]]]  # (usage month, model, Δrequests, Δtokens, Δcost)
    bonus_tokens: dict[int, int]


def load_month(conn: sqlite3.Connection, month: Month, account_id: int | None = None) -> MonthData:
    one = "" if account_id is None else " AND {col} = :account"
    args: dict[str, Any] = {"first": month.first_day, "last": month.last_day, "end": month.end,
                            "start": month.start, "account": account_id}
    accounts = [tuple(r) for r in conn.execute(
        "SELECT id, plan, created_at FROM users WHERE created_at < :end" + one.format(col="id")
        + " ORDER BY id", args)]
    changes: dict[int, list] = defaultdict(list)
    for acc, at, from_plan, to_plan in conn.execute(
            "SELECT account_id, at, from_plan, to_plan FROM billing_plan_changes WHERE at < :end"
            + one.format(col="account_id") + " ORDER BY account_id, at, id", args):
        changes[acc].append((at, from_plan, to_plan))
    usage: dict[int, list] = defaultdict(list)
    for acc, model, requests, tokens, cost in conn.execute(
            "SELECT user_id, model, SUM(requests), SUM(total_tokens), SUM(cost_nano) FROM usage_daily "
            "WHERE day >= :first AND day <= :last" + one.format(col="user_id")
            + " GROUP BY user_id, model ORDER BY user_id, model", args):
        usage[acc].append((model, requests, tokens, cost))
    bonus: dict[int, int] = defaultdict(int)
    for referred, referrer, reward in conn.execute(
            "SELECT referred_id, referrer_id, reward_tokens FROM referrals WHERE at >= :start AND at < :end",
            args):
        bonus[referred] += reward
        bonus[referrer] += reward
    return MonthData(month, accounts, changes, usage, _late_usage(conn, month, account_id), bonus)


def _late_usage(conn: sqlite3.Connection, month: Month, account_id: int | None) -> dict[int, list]:
    lookback = month
    for _ in range(LATE_USAGE_MONTHS):
        lookback = lookback.previous()
    args = {"from_month": str(lookback), "month": str(month), "first": lookback.first_day,
            "before": month.first_day, "account": account_id}
    one = "" if account_id is None else " AND {col} = :account"
    final = {tuple(r) for r in conn.execute(
        "SELECT account_id, month FROM invoices WHERE status = 'final' AND month >= :from_month "
        "AND month < :month" + one.format(col="account_id"), args)}
    if not final:
        return {}
    billed = {(r[0], r[1], r[2]): (r[3], r[4], r[5]) for r in conn.execute(
        "SELECT account_id, usage_month, model, requests, tokens, cost_nano FROM billed_usage "
        "WHERE usage_month >= :from_month AND usage_month < :month" + one.format(col="account_id"), args)}
    late: dict[int, list] = defaultdict(list)
    for acc, used_in, model, requests, tokens, cost in conn.execute(
            "SELECT user_id, substr(day, 1, 7), model, SUM(requests), SUM(total_tokens), SUM(cost_nano) "
            "FROM usage_daily WHERE day >= :first AND day < :before" + one.format(col="user_id")
            + " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", args):
        if (acc, used_in) not in final:
            continue
        b_req, b_tok, b_cost = billed.get((acc, used_in, model), (0, 0, 0))
        if (requests, tokens, cost) != (b_req, b_tok, b_cost):
            late[acc].append((used_in, model, requests - b_req, tokens - b_tok, cost - b_cost))
    return late


def _plan(snapshot: Snapshot, name: str) -> PlanConfig:
    return snapshot.plans.get(name) or PlanConfig(name=name)


def _unit_price(snapshot: Snapshot, plan: PlanConfig, model_name: str) -> dict[str, str] | None:
    model = snapshot.models.get(model_name)
    pricing = plan.price.pricing_for(model) if model is not None else None
    if pricing is None:
        return None
    price = {"input_per_1m": nano_to_text(pricing.input_nano),
             "output_per_1m": nano_to_text(pricing.output_nano)}
    if pricing.cached_input_nano is not None:
        price["cached_input_per_1m"] = nano_to_text(pricing.cached_input_nano)
    return price


def bill_account(snapshot: Snapshot, data: MonthData, account: tuple[int, str, float]) -> Bill:
    account_id, current_plan, created_at = account
    month, currency = data.month, snapshot.billing.currency
    parts: list[Segment] = segments(data.changes.get(account_id, []), current_plan, created_at, month)
    closing = _plan(snapshot, parts[-1].plan if parts else current_plan)
    lines: list[Line] = []
    included = data.bonus_tokens.get(account_id, 0)
    for part in parts:
        plan = _plan(snapshot, part.plan)
        included += plan.price.included_tokens * part.days // month.days
        fee = plan.price.monthly_fee_nano
        if not fee:
            continue
        whole = part.days == month.days
        described = (f"{plan.name} plan, {month}" if whole else
                     f"{plan.name} plan, {part.days} of {month.days} days from {month}-{part.first_day + 1:02d}")
        lines.append(Line("fee", described, nano_to_minor(Fraction(fee * part.days, month.days), currency),
                          days=part.days, unit_price={"monthly": nano_to_text(fee)}))
    bill = Bill(account_id, closing.name, lines, included_tokens=included)
    total_tokens = total_cost = 0
    for model, requests, tokens, cost in data.usage.get(account_id, []):
        lines.append(Line("usage", f"{model}: {requests} requests, {tokens} tokens",
                          nano_to_minor(cost, currency), model=model, usage_month=str(month),
                          requests=requests, tokens=tokens, unit_price=_unit_price(snapshot, closing, model),
                          cost_nano=cost))
        bill.charged[(str(month), model)] = (requests, tokens, cost)
        total_tokens += tokens
        total_cost += cost
    covered = min(included, total_tokens)
    if covered and total_cost:
        credit = Fraction(total_cost * covered, total_tokens)
        lines.append(Line("included", f"Included tokens: {covered} of {included} used",
                          -nano_to_minor(credit, currency), tokens=covered))
    for used_in, model, requests, tokens, cost in data.late.get(account_id, []):
        lines.append(Line("adjustment", f"Late usage of {used_in}, {model}: {requests} requests, "
                          f"{tokens} tokens", nano_to_minor(cost, currency), model=model,
                          usage_month=used_in, requests=requests, tokens=tokens, cost_nano=cost))
        bill.charged[(used_in, model)] = (requests, tokens, cost)
    return bill


@dataclass(frozen=True, slots=True)
class Generated:
    month: str
    status: str  # "draft" | "final": what this run left the month's invoices as
    drafted: int = 0
    finalized: int = 0
    unchanged: int = 0  # already final before this run

    def as_dict(self) -> dict[str, Any]:
        return {"object": "invoice.generation", "month": self.month, "status": self.status,
                "drafted": self.drafted, "finalized": self.finalized, "unchanged": self.unchanged}


def generate(conn: sqlite3.Connection, snapshot: Snapshot, month: Month, *, now: float) -> Generated:
    """Draft or finalize every account's invoice of `month`. Run inside one write transaction."""
    take_turn = getattr(conn, "take_turn", None)
    if take_turn is not None:  # SQLite's BEGIN IMMEDIATE has made the writers take turns already
        take_turn(GENERATE_LOCK)
    final = now >= month.end + snapshot.billing.invoice_grace
    done = {r[0] for r in conn.execute(
        "SELECT account_id FROM invoices WHERE month = ? AND status = 'final'", (str(month),))}
    (eligible,) = conn.execute("SELECT COUNT(*) FROM users WHERE created_at < ?", (month.end,)).fetchone()
    if len(done) >= eligible:
        # Every invoice of the month is final already: the hourly job's usual case, kept cheap.
        return Generated(str(month), "final", 0, 0, len(done))
    data = load_month(conn, month)
    drafted = finalized = 0
    for account in data.accounts:
        if account[0] in done:
            continue
        bill = bill_account(snapshot, data, account)
        if final:
            finalize(conn, snapshot, month, bill, now=now)
            finalized += 1
        else:
            _store(conn, snapshot, month, bill, now=now, status="draft", number=None)
            drafted += 1
    return Generated(str(month), "final" if final else "draft", drafted, finalized, len(done))


def finalize(conn: sqlite3.Connection, snapshot: Snapshot, month: Month, bill: Bill, *, now: float) -> int:
    (seq,) = conn.execute("UPDATE invoice_numbers SET last = last + 1 WHERE id = 1 RETURNING last").fetchone()
    number = f"{snapshot.billing.invoice_prefix}{seq:06d}"
    invoice_id = _store(conn, snapshot, month, bill, now=now, status="final", number=number)
    conn.executemany(
        "INSERT INTO billed_usage (account_id, usage_month, model, requests, tokens, cost_nano) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, usage_month, model) DO UPDATE SET "
        "requests = billed_usage.requests + excluded.requests, "
        "tokens = billed_usage.tokens + excluded.tokens, "
        "cost_nano = billed_usage.cost_nano + excluded.cost_nano",
        [(bill.account_id, used_in, model, *figures) for (used_in, model), figures in bill.charged.items()])
    currency = snapshot.billing.currency
    emit(conn, "invoice.finalized", {"invoice_id": invoice_id, "number": number, "month": str(month),
                                     "total": minor_to_text(bill.total_minor, currency), "currency": currency},
         now=now, account_id=bill.account_id, event_id=f"evt_invoice_{invoice_id}_finalized")
    return invoice_id


def _store(conn: sqlite3.Connection, snapshot: Snapshot, month: Month, bill: Bill, *, now: float,
           status: str, number: str | None) -> int:
    (invoice_id,) = conn.execute(
        "INSERT INTO invoices (account_id, month, status, number, currency, total_minor, plan, created_at, "
        "updated_at, finalized_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (account_id, month) DO UPDATE SET status = excluded.status, number = excluded.number, "
        "currency = excluded.currency, total_minor = excluded.total_minor, plan = excluded.plan, "
        "updated_at = excluded.updated_at, finalized_at = excluded.finalized_at "
        "WHERE invoices.status = 'draft' RETURNING id",
        (bill.account_id, str(month), status, number, snapshot.billing.currency, bill.total_minor, bill.plan,
         now, now, now if status == "final" else None)).fetchone()
    conn.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", (invoice_id,))
    conn.executemany(
        "INSERT INTO invoice_lines (invoice_id, position, kind, description, model, usage_month, days, "
        "requests, tokens, unit_price, cost_nano, amount_minor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(invoice_id, i, ln.kind, ln.description, ln.model, ln.usage_month, ln.days, ln.requests, ln.tokens,
          orjson.dumps(ln.unit_price).decode() if ln.unit_price is not None else None, ln.cost_nano,
          ln.amount_minor) for i, ln in enumerate(bill.lines)])
    return invoice_id


# -- reading ------------------------------------------------------------------------

_INVOICE_COLUMNS = ("id, account_id, month, status, number, currency, total_minor, plan, created_at, "
                    "updated_at, finalized_at")


def invoice_view(row: Iterable[Any], lines: list[sqlite3.Row] | None = None) -> dict[str, Any]:
    (invoice_id, account_id, month, status, number, currency, total, plan, created, updated,
     finalized) = tuple(row)
    view: dict[str, Any] = {
        "object": "invoice", "id": invoice_id, "account_id": account_id, "month": month,
        "status": status, "number": number, "currency": currency, "plan": plan,
        "total": minor_to_text(total, currency), "total_minor": total,
        "created_at": created, "updated_at": updated, "finalized_at": finalized,
    }
    if lines is not None:
        view["lines"] = [line_view(line, currency) for line in lines]
    return view


def line_view(line: sqlite3.Row, currency: str) -> dict[str, Any]:
    view = {k: line[k] for k in ("kind", "description", "model", "usage_month", "days", "requests", "tokens")}
    view["unit_price"] = orjson.loads(line["unit_price"]) if line["unit_price"] else None
    view["cost_usd"] = nano_to_text(line["cost_nano"]) if line["cost_nano"] is not None else None
    view["amount"] = minor_to_text(line["amount_minor"], currency)
    view["amount_minor"] = line["amount_minor"]
    return view


def bill_view(bill: Bill, month: Month, currency: str) -> dict[str, Any]:
    """An unsaved bill (the estimate of the month in progress) in the invoice shape."""
    return {
        "object": "invoice.estimate", "month": str(month), "status": "estimate", "currency": currency,
        "plan": bill.plan, "total": minor_to_text(bill.total_minor, currency), "total_minor": bill.total_minor,
        "lines": [{"kind": ln.kind, "description": ln.description, "model": ln.model,
                   "usage_month": ln.usage_month, "days": ln.days, "requests": ln.requests, "tokens": ln.tokens,
                   "unit_price": ln.unit_price,
                   "cost_usd": nano_to_text(ln.cost_nano) if ln.cost_nano is not None else None,
                   "amount": minor_to_text(ln.amount_minor, currency), "amount_minor": ln.amount_minor}
                  for ln in bill.lines],
    }


def get_invoice(conn: sqlite3.Connection, invoice_id: int) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    if row is None:
        return None
    lines = conn.execute("SELECT * FROM invoice_lines WHERE invoice_id = ? ORDER BY position",
                         (invoice_id,)).fetchall()
    return invoice_view(row, lines)


def list_invoices(conn: sqlite3.Connection, *, account_id: int | None = None, month: str | None = None,
                  status: str | None = None, before: int | None = None, limit: int = 50) -> tuple[list, bool]:
    where, args = [], []
    for column, value in (("account_id", account_id), ("month", month), ("status", status)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if before is not None:
        where.append("id < ?")
        args.append(before)
    sql = f"SELECT {_INVOICE_COLUMNS} FROM invoices"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    rows = conn.execute(sql, (*args, limit + 1)).fetchall()
    return [invoice_view(r) for r in rows[:limit]], len(rows) > limit
