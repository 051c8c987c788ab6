"""SQLite's SQL as PostgreSQL reads it: the one place where the two dialects differ.

The codebase writes SQL once, in the subset both databases share (see the
README's store notes). What is left is mechanical and translated here, once
per distinct statement (the store caches the result):

    DML  `?` placeholders become `%s`, `:name` ones `%(name)s` (and a literal `%` becomes `%%`) outside
         string literals; LIKE becomes ILIKE (SQLite's LIKE ignores ASCII
         case); scalar MAX(a, b)/MIN(a, b) become GREATEST/LEAST; CAST AS
         INTEGER becomes BIGINT; date(ts, 'unixepoch') becomes the UTC day;
         `IS [NOT] ?` becomes IS [NOT] DISTINCT FROM; instr(s, sub) becomes
         strpos(s, sub) (both 1-based, 0 when sub is absent).
    DDL  INTEGER becomes BIGINT (epoch ms and nano-dollar sums exceed 32 bits),
         REAL DOUBLE PRECISION, BLOB BYTEA, an INTEGER PRIMARY KEY an identity
         column, WITHOUT ROWID goes; the usage table is range-partitioned by
         month on its `ts`; SQLite triggers are replaced by PL/pgSQL ones.
"""

from __future__ import annotations

import re

# The UTC day of an epoch-seconds column, as SQLite's date(x, 'unixepoch') names it.
_PG_DAY = "to_char(to_timestamp({0}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
_DATE_UNIXEPOCH = re.compile(r"\bdate\(\s*([\w.]+)\s*,\s*'unixepoch'\s*\)", re.IGNORECASE)
_RANDOM_HEX = re.compile(r"lower\(hex\(randomblob\((\d+)\)\)\)", re.IGNORECASE)
_CAST_INTEGER = re.compile(r"\bAS\s+INTEGER\s*\)", re.IGNORECASE)
_CAST_REAL = re.compile(r"\bAS\s+REAL\s*\)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# SQLite's `a IS ?` / `a IS NOT ?` compare any two values, NULL included; PostgreSQL's IS
# takes only NULL/TRUE/FALSE, its null-safe comparison is IS [NOT] DISTINCT FROM.
_IS_NOT_PARAM = re.compile(r"\bIS\s+NOT\s+\?", re.IGNORECASE)
_IS_PARAM = re.compile(r"\bIS\s+\?", re.IGNORECASE)

# Tables partitioned by month on PostgreSQL, and the epoch-seconds column they split on.
PARTITIONED = {"usage": "ts"}


def _random_hex(match: re.Match) -> str:
    chars = 2 * int(match.group(1))
    return f"substr(md5(random()::text || clock_timestamp()::text), 1, {chars})"


def _pre(sql: str) -> str:
    """Rewrites whose patterns include a string literal: before the literal-aware pass."""
    sql = _DATE_UNIXEPOCH.sub(lambda m: _PG_DAY.format(m.group(1)), sql)
    sql = _RANDOM_HEX.sub(_random_hex, sql)
    sql = _CAST_INTEGER.sub("AS BIGINT)", sql)
    sql = _IS_NOT_PARAM.sub("IS DISTINCT FROM ?", sql)
    sql = _IS_PARAM.sub("IS NOT DISTINCT FROM ?", sql)
    return _CAST_REAL.sub("AS DOUBLE PRECISION)", sql)


def _matching_paren(sql: str, start: int) -> tuple[int, bool]:
    """Index of the ')' closing sql[start] == '(' and whether a comma sits at its top level."""
    depth, comma, i, quote = 0, False, start, None
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i, comma
        elif ch == "," and depth == 1:
            comma = True
        i += 1
    return -1, comma


def to_postgres(sql: str) -> str:
    """A DML statement written for sqlite3 (qmark style), for psycopg (format style)."""
    sql = _pre(sql)
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = sql.find(ch, i + 1)
            while end != -1 and end + 1 < n and sql[end + 1] == ch:  # '' escapes a quote
                end = sql.find(ch, end + 2)
            end = n - 1 if end == -1 else end
            out.append(sql[i:end + 1].replace("%", "%%"))
            i = end + 1
            continue
        if ch == "?":
            out.append("%s")
        elif (ch == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_")
              and (i == 0 or sql[i - 1] != ":")):
            name = _WORD.match(sql, i + 1).group(0)  # type: ignore[union-attr]
            out.append(f"%({name})s")
            i += 1 + len(name)
            continue
        elif ch == "%":
            out.append("%%")
        elif ch.isalpha() or ch == "_":
            word = _WORD.match(sql, i).group(0)  # type: ignore[union-attr]
            upper = word.upper()
            nxt = i + len(word)
            if upper in ("MAX", "MIN") and nxt < n and sql[nxt] == "(":
                _, comma = _matching_paren(sql, nxt)
                out.append(("GREATEST" if upper == "MAX" else "LEAST") if comma else word)
            elif upper == "INSTR" and nxt < n and sql[nxt] == "(":
                out.append("strpos")
            elif upper == "LIKE" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                out.append("ILIKE")
            else:
                out.append(word)
            i = nxt
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


# -- DDL -------------------------------------------------------------------

_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_ALTER_ADD = re.compile(r"^\s*ALTER\s+TABLE\s+\w+\s+ADD\s+COLUMN", re.IGNORECASE)
_CREATE_TRIGGER = re.compile(r"^\s*CREATE\s+TRIGGER\s+(\w+)", re.IGNORECASE)
_PK_AUTO = re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b", re.IGNORECASE)


def _column_types(sql: str) -> str:
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    return re.sub(r"\bBLOB\b", "BYTEA", sql)


def ddl_to_postgres(sql: str) -> list[str]:
    """The PostgreSQL statements for one migration statement (a trigger becomes two)."""
    trigger = _CREATE_TRIGGER.match(sql)
    if trigger:
        name = trigger.group(1)
        if name not in TRIGGERS:
            raise ValueError(f"trigger {name} has no PostgreSQL version in proxy/store/dialect.py")
        return list(TRIGGERS[name])
    table = _CREATE_TABLE.match(sql)
    if table:
        sql = re.sub(r"\)\s*WITHOUT\s+ROWID\s*$", ")", sql.strip(), flags=re.IGNORECASE)
        name = table.group(1)
        if name in PARTITIONED:
            # A partitioned table's primary key must hold the partition column.
            sql = _PK_AUTO.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY", sql, count=1)
            sql = _column_types(sql)
            body_end = sql.rstrip().rfind(")")
            sql = (sql[:body_end].rstrip() + f",\n    PRIMARY KEY (id, {PARTITIONED[name]})\n)"
                   f" PARTITION BY RANGE ({PARTITIONED[name]})")
        else:
            sql = _PK_AUTO.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
            sql = _column_types(sql)
        return [to_postgres(sql)]
    if _ALTER_ADD.match(sql):
        return [to_postgres(_column_types(sql))]
    return [to_postgres(sql)]


# SQLite's triggers of the billing migration (proxy/billing/tables.py), as PL/pgSQL.
TRIGGERS: dict[str, tuple[str, ...]] = {
    "billing_plan_change_logged": (
        """CREATE FUNCTION billing_plan_change_logged() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.plan IS DISTINCT FROM NEW.plan AND NEW.plan IS DISTINCT FROM (
                SELECT to_plan FROM billing_plan_changes WHERE account_id = NEW.id
                ORDER BY id DESC LIMIT 1) THEN
                INSERT INTO billing_plan_changes (account_id, at, from_plan, to_plan, source)
                VALUES (NEW.id, extract(epoch FROM clock_timestamp()), OLD.plan, NEW.plan, 'account');
            END IF;
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER billing_plan_change_logged AFTER UPDATE OF plan ON users "
        "FOR EACH ROW EXECUTE FUNCTION billing_plan_change_logged()",
    ),
    "referral_code_for_new_account": (
        """CREATE FUNCTION referral_code_for_new_account() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO referral_codes (account_id, code)
            VALUES (NEW.id, substr(md5(random()::text || clock_timestamp()::text), 1, 12));
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER referral_code_for_new_account AFTER INSERT ON users "
        "FOR EACH ROW EXECUTE FUNCTION referral_code_for_new_account()",
    ),
}
