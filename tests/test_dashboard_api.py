"""The dashboard's server side without a browser: the API it added (key_id on stats,
sessions), its headers, redirects and errors, and Export CSV, against a real gateway."""

from __future__ import annotations

import asyncio
import csv
import io
import re

import aiohttp
import openai
import pytest

from proxy.appkeys import STORE
from proxy.cli.accounts import create_user_and_key
from proxy.dashboard.export import PAGE_ROWS, safe
from proxy.usage import UsageRecord
from proxy.usage.rollup import write_batch

from .db_access import execute
from .gateway_harness import GatewayHarness, upstream_entry

PASSWORD = "correct horse battery"
NOON = 1773576000.0  # 2026-03-15T12:00:00Z


@pytest.fixture
async def gw(tmp_path, upstreams):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)])
    # The account exists from the gateway's "now", so billing counts it in that month.
    harness.user_id, harness.key = create_user_and_key(harness.db_settings, "tenant@example.com", PASSWORD, "test",
                                                       "e2e", bcrypt_rounds=4, clock=lambda: NOON)
    await harness.start(clock=lambda: NOON)
    yield harness
    await harness.stop()


async def session_for(gw, email="tenant@example.com") -> aiohttp.ClientSession:
    """A browser-like client: cookie jar, and the Origin header a same-origin fetch sends."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 headers={"Origin": gw.url})
    async with http.post(gw.url + "/api/auth/login", json={"email": email, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
    return http


def usage_rows(user_id: int, key_id: int | None, count: int, *, start: float = NOON - 3600,
               model: str = "gpt-4o-mini") -> list[UsageRecord]:
    return [UsageRecord(start + i * 0.01, f"req_{key_id}_{i}", user_id, key_id, "chat", model, model, "a",
                        200, None, 10, 5, 15, cost_nano=15_000, latency_ms=12.0)
            for i in range(count)]


async def add_usage(gw, rows: list[UsageRecord]) -> None:
    await gw.app[STORE].write(lambda conn: write_batch(conn, rows))


async def create_key(http, gw, name: str) -> dict:
    async with http.post(gw.url + "/api/keys", json={"name": name}) as r:
        assert r.status == 201, await r.text()
        return await r.json()


# -- API additions -------------------------------------------------------------------------


async def test_stats_filtered_by_key_id_count_only_that_key(gw):
    http = await session_for(gw)
    async with http:
        other = await create_key(http, gw, "other")
        await add_usage(gw, usage_rows(gw.user_id, 1, 4) + usage_rows(gw.user_id, other["id"], 7))
        async with http.get(gw.url + f"/api/usage/stats?key_id={other['id']}&group_by=model") as r:
            body = await r.json()
        assert r.status == 200
        assert body["key_id"] == other["id"]
        assert [(row["model"], row["requests"], row["total_tokens"]) for row in body["data"]] == [
            ("gpt-4o-mini", 7, 105)]
        async with http.get(gw.url + "/api/usage/stats?key_id=1") as r:
            assert (await r.json())["total"]["requests"] == 4
        async with http.get(gw.url + "/api/usage/stats?key_id=first") as r:
            error = (await r.json())["error"]
        assert r.status == 400
        assert (error["param"], error["message"]) == (
            "key_id", "key_id='first' is not valid; give a whole number between 1 and 9223372036854775807.")


async def test_stats_key_id_of_another_account_shows_nothing(gw):
    create_user_and_key(gw.db_settings, "someone@example.com", PASSWORD, "test", "theirs", bcrypt_rounds=4)
    await add_usage(gw, usage_rows(2, 2, 5))
    http = await session_for(gw)
    async with http, http.get(gw.url + "/api/usage/stats?key_id=2") as r:
        body = await r.json()
    assert r.status == 200
    assert (body["data"], body["total"]["requests"]) == ([], 0)


async def test_an_admin_finds_users_by_any_part_of_their_email_taken_literally(gw):
    create_user_and_key(gw.db_settings, "root@example.com", PASSWORD, "test", "ops", bcrypt_rounds=4)
    execute(gw.db_path, "UPDATE users SET role = 'admin' WHERE email = 'root@example.com'")
    for email in ("a_b@example.com", "axb@example.com"):
        create_user_and_key(gw.db_settings, email, PASSWORD, "test", "k", bcrypt_rounds=4)
    http = await session_for(gw, "root@example.com")
    async with http:
        for part, expected in (("tenant", ["tenant@example.com"]), ("a_b", ["a_b@example.com"]),
                               ("EXAMPLE.com", ["tenant@example.com", "root@example.com", "a_b@example.com",
                                                "axb@example.com"]),
                               ("nobody", [])):
            async with http.get(gw.url + "/api/admin/users", params={"email": part}) as r:
                assert r.status == 200, await r.text()
                assert [u["email"] for u in (await r.json())["data"]] == expected, part


async def test_admin_stats_by_key_id_across_users(gw):
    create_user_and_key(gw.db_settings, "root@example.com", PASSWORD, "test", "ops", bcrypt_rounds=4)
    execute(gw.db_path, "UPDATE users SET role = 'admin' WHERE email = 'root@example.com'")
    await add_usage(gw, usage_rows(1, 1, 3) + usage_rows(1, 1, 2, model="text-embedding-3-small"))
    http = await session_for(gw, "root@example.com")
    async with http:
        for group, expected in (("day", [("2026-03-15", 5)]),
                                ("model", [("gpt-4o-mini", 3), ("text-embedding-3-small", 2)])):
            async with http.get(gw.url + f"/api/usage/stats?key_id=1&group_by={group}") as r:
                body = await r.json()
            assert [(row[group], row["requests"]) for row in body["data"]] == expected


async def test_key_list_reports_each_keys_last_use(gw):
    http = await session_for(gw)
    async with http:
        second = await create_key(http, gw, "second")
        await create_key(http, gw, "unused")
        await add_usage(gw, usage_rows(gw.user_id, 1, 2, start=NOON - 500)
                        + usage_rows(gw.user_id, second["id"], 3, start=NOON - 100))
        async with http.get(gw.url + "/api/keys") as r:
            keys = (await r.json())["data"]
    assert [(k["name"], k["usage"]["requests"], k["usage"]["last_used"]) for k in keys] == [
        ("e2e", 2, NOON - 500 + 0.01), ("second", 3, NOON - 100 + 0.02), ("unused", 0, None)]


async def test_sessions_are_listed_and_log_out_everywhere_ends_them_all(gw):
    first = await session_for(gw)
    async with first:
        async with first.post(gw.url + "/api/auth/login",
                              json={"email": "tenant@example.com", "password": PASSWORD}) as r:
            other_token = (await r.json())["token"]  # a second session, as an API client holds it
        async with first.get(gw.url + "/api/auth/sessions") as r:
            listed = (await r.json())["data"]
        assert [s["current"] for s in listed] == [True, False]  # newest first: the jar has the newest
        async with first.delete(gw.url + "/api/auth/sessions", json={}) as r:
            assert (r.status, (await r.json())["revoked"]) == (200, 2)
            assert "bm_session=" in r.headers["Set-Cookie"]
        async with first.get(gw.url + "/api/auth/me",
                             headers={"Authorization": f"Bearer {other_token}"}) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (401, "invalid_session")


async def test_log_out_everywhere_from_another_site_is_refused(gw):
    http = await session_for(gw)
    async with http:
        async with http.delete(gw.url + "/api/auth/sessions", json={},
                               headers={"Origin": "http://evil.example"}) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (403, "csrf_rejected")
        async with http.get(gw.url + "/api/auth/sessions") as r:
            assert len((await r.json())["data"]) == 1


# -- pages: who sees what, headers, errors --------------------------------------------------------

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
                               "form-action 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def test_every_dashboard_answer_carries_the_security_headers(gw):
    anonymous = aiohttp.ClientSession()
    http = await session_for(gw)
    async with anonymous, http:
        answers = [
            await anonymous.get(gw.url + "/dashboard/logs", allow_redirects=False),
            await anonymous.get(gw.url + "/dashboard/login"),
            await anonymous.get(gw.url + "/dashboard/static/app.css"),
            await anonymous.get(gw.url + "/dashboard/nothing-here"),
            await http.get(gw.url + "/dashboard"),
            await http.get(gw.url + "/dashboard/logs?status=bogus"),
            await http.get(gw.url + "/dashboard/logs/export.csv"),
        ]
        statuses = [r.status for r in answers]
        for r in answers:
            assert {name: r.headers.get(name) for name in HEADERS} == HEADERS, r.url
            r.release()
    assert statuses == [303, 200, 200, 404, 200, 400, 200]


async def test_anonymous_visits_go_to_the_login_page_and_come_back(gw):
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(gw.url + "/dashboard/usage?days=7", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/dashboard/login?next=%2Fdashboard%2Fusage%3Fdays%3D7")
        async with anonymous.get(gw.url + "/dashboard", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/dashboard/login")
        async with anonymous.get(gw.url + "/dashboard/logs/export.csv", allow_redirects=False) as r:
            assert r.status == 303
    http = await session_for(gw)
    async with http:
        async with http.get(gw.url + "/dashboard/login?next=%2Fdashboard%2Fusage", allow_redirects=False) as r:
            assert r.headers["Location"] == "/dashboard/usage"
        # Never an open redirect to another site.
        for target in ("//evil.example/dashboard", "https://evil.example", "/dashboard\\@evil.example"):
            async with http.get(gw.url + "/dashboard/login", params={"next": target},
                                allow_redirects=False) as r:
                assert r.headers["Location"] == "/dashboard", target


async def test_every_tenant_page_renders_its_charts_as_figures_with_tables(gw):
    await add_usage(gw, usage_rows(gw.user_id, 1, 3))
    http = await session_for(gw)
    async with http:
        for path, needles in (
            ("/dashboard", ("<figcaption>Usage by day, last 30 days (2026-02-14 to 2026-03-15, UTC)</figcaption>",
                            '<td data-value="3">3</td>')),
            ("/dashboard/api-keys", ("<button type=\"submit\" class=\"primary\">Create key</button>",)),
            ("/dashboard/usage?days=7", ("<figcaption>Requests and tokens by day</figcaption>",
                                         "<figcaption>Tokens by model</figcaption>",
                                         "<figcaption>Tokens by key</figcaption>",
                                         "<button type=\"submit\">Export CSV</button>")),
            ("/dashboard/logs?key_id=1", ("<td>req_1_2</td>", "<dt>x-request-id</dt>")),
            ("/dashboard/billing", ("<p class=\"plan-name\">test</p>",)),
            ("/dashboard/settings", ("Log out everywhere", "this browser")),
        ):
            async with http.get(gw.url + path) as r:
                text = await r.text()
            assert r.status == 200, (path, text[:500])
            for needle in needles:
                assert needle in text, (path, needle)


async def test_a_tenant_gets_403_on_the_admin_page(gw):
    http = await session_for(gw)
    async with http, http.get(gw.url + "/dashboard/admin") as r:
        text = await r.text()
    assert r.status == 403
    assert "This page is for administrators." in text


async def test_a_bad_filter_is_a_400_page_with_the_apis_message(gw):
    http = await session_for(gw)
    async with http:
        async with http.get(gw.url + "/dashboard/logs?status=bogus") as r:
            text = await r.text()
        assert r.status == 400
        assert "status=&#39;bogus&#39; is not valid; give an HTTP status (429)" in text
        async with http.get(gw.url + "/dashboard/usage?from=2026-03-10&to=2026-03-01") as r:
            assert r.status == 400
            assert "&#39;from&#39; (2026-03-10) is after &#39;to&#39; (2026-03-01); swap them." in await r.text()


async def test_what_a_user_typed_is_escaped_in_pages(gw):
    http = await session_for(gw)
    async with http:
        await create_key(http, gw, "<script>alert(1)</script>")
        async with http.get(gw.url + "/dashboard/api-keys") as r:
            text = await r.text()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<script") == 1  # only the dashboard's own, by src


async def test_session_cookie_is_httponly_lax_and_secure_behind_https(tmp_path, upstreams):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)],
                                   server={"public_url": "https://gateway.example"})
    await harness.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(harness.url + "/api/auth/login",
                                 json={"email": "tenant@example.com", "password": PASSWORD}) as r:
                cookie = r.cookies["bm_session"]
        assert (cookie["httponly"], cookie["samesite"], cookie["secure"]) == (True, "Lax", True)
    finally:
        await harness.stop()


async def test_session_cookie_is_not_secure_over_plain_http(gw):
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/api/auth/login",
                             json={"email": "tenant@example.com", "password": PASSWORD}) as r:
            cookie = r.cookies["bm_session"]
    assert (cookie["httponly"], cookie["samesite"], cookie["secure"]) == (True, "Lax", "")


async def test_vendored_library_ships_with_its_licence(gw):
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/dashboard/static/vendor/uPlot.LICENSE") as r:
            assert (r.status, r.content_type) == (200, "text/plain")
            assert "The MIT License" in await r.text()
        async with http.get(gw.url + "/dashboard/static/vendor/uPlot.iife.min.js") as r:
            tag = r.headers["ETag"]
            assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        async with http.get(gw.url + "/dashboard/static/vendor/uPlot.iife.min.js",
                            headers={"If-None-Match": tag}) as r:
            assert r.status == 304


# -- Export CSV -------------------------------------------------------------------------------------


def test_formula_cells_are_escaped():
    assert [safe(c) for c in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "plain", "$0.10", "")] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "plain", "$0.10", ""]


async def test_logs_export_streams_every_filtered_row_across_pages(gw):
    rows = PAGE_ROWS * 2 + 345
    await add_usage(gw, usage_rows(gw.user_id, 1, rows)
                    + usage_rows(gw.user_id, 1, 10, model="text-embedding-3-small"))
    http = await session_for(gw)
    async with http, http.get(gw.url + "/dashboard/logs/export.csv?model=gpt-4o-mini&from=2026-03-15") as r:
        assert r.status == 200
        assert r.headers["Content-Disposition"] == 'attachment; filename="bluesminds-logs-20260315-120000.csv"'
        exported = list(csv.reader(io.StringIO(await r.text())))
    assert exported[0] == ["Time (UTC)", "Request ID", "Model", "Key", "Status", "Prompt tokens",
                           "Completion tokens", "Total tokens", "Cost (USD)", "Latency"]
    assert len(exported) == rows + 1
    assert [row[1] for row in exported[1:]] == [f"req_1_{i}" for i in reversed(range(rows))]
    assert exported[1][2:] == ["gpt-4o-mini", "e2e (#1)", "200", "10", "5", "15", "$0.000015", "12 ms"]


async def test_logs_export_escapes_a_formula_in_a_key_name(gw):
    http = await session_for(gw)
    async with http:
        key = await create_key(http, gw, "=HYPERLINK(\"http://evil.example\")")
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key["key"], max_retries=0)
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        await client.close()
        for _ in range(400):  # the recorder flushes every 50 ms; poll, bounded
            async with http.get(gw.url + "/api/usage/logs") as r:
                if (await r.json())["data"]:
                    break
            await asyncio.sleep(0.01)
        async with http.get(gw.url + "/dashboard/logs/export.csv") as r:
            exported = list(csv.reader(io.StringIO(await r.text())))
    assert exported[1][3] == "'=HYPERLINK(\"http://evil.example\") (#2)"


async def test_usage_export_is_the_by_day_table_with_its_filters(gw):
    await add_usage(gw, usage_rows(gw.user_id, 1, 3) + usage_rows(gw.user_id, 1, 2, start=NOON - 86400))
    http = await session_for(gw)
    async with http, http.get(gw.url + "/dashboard/usage/export.csv?from=2026-03-13&to=2026-03-15&key_id=1") as r:
        exported = list(csv.reader(io.StringIO(await r.text())))
    assert exported == [
        ["Day", "Requests", "Errors", "Prompt tokens", "Completion tokens", "Total tokens", "Cost (USD)",
         "Latency p95"],
        ["2026-03-13", "0", "0", "0", "0", "0", "$0.00", "—"],
        ["2026-03-14", "2", "0", "20", "10", "30", "$0.00003", "12 ms"],
        ["2026-03-15", "3", "0", "30", "15", "45", "$0.000045", "12 ms"],
        ["Total", "5", "0", "50", "25", "75", "$0.000075", "12 ms"],
    ]


def test_export_cells_equal_the_tables_cells():
    from proxy.dashboard.columns import LogCells, log_cells, safe

    names = {3: "laptop", 4: "=cmd"}
    fast = LogCells(names)
    cases = [
        (NOON + 0.999, "req_a", "gpt-4o-mini", 3, 200, 12, 5, 17, 12_300, 8.5),
        (86399.5, "req_b", "m", None, 502, 0, 0, 0, 0, 30012.0),
        (NOON + 86400 * 40 + 3661, "-1", "@model", 4, 429, 1234567, 0, 1234567, 12_500_000_000, 0.0),
        (NOON, "req_c", "gpt-4o-mini", 99, 200, -1, 0, -1, 0, 1.0),
    ]
    for ts, rid, model, key, status, prompt, completion, total, cost_nano, latency in cases:
        entry = {"ts": ts, "request_id": rid, "model": model, "key_id": key, "status": status,
                 "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
                 "cost_usd": cost_nano / 1e9, "latency_ms": latency}
        assert fast(ts, rid, model, key, status, prompt, completion, total, cost_nano, latency) == [
            safe(cell) for cell in log_cells(entry, names)]


def indexes_walked(conn, sql: str, args: list, index: str) -> tuple[set[str], set[str], str]:
    """The indexes the query's plan walks, the names `index` goes by there, and the plan.

    SQLite: EXPLAIN QUERY PLAN names the index itself. PostgreSQL: the usage table is
    partitioned, so the plan walks the index's copy on each monthly partition (its
    pg_partition_tree); sequential scans are turned off for the statement, since a
    table of a few rows is otherwise read whole whatever its indexes."""
    if getattr(conn, "dialect", "sqlite") != "postgres":
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
        return set(re.findall(r"\bINDEX (\w+)", plan)), {index}, plan
    with conn.raw.transaction():
        conn.raw.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, args))
        names = {r[0] for r in conn.execute("SELECT relid::text FROM pg_partition_tree(?::regclass)", (index,))}
    return set(re.findall(r"\b(?:using|Index Scan on) (\w+)", plan)), names, plan


async def test_a_status_filter_walks_only_failed_rows(gw):
    from proxy.usage.stats import LogsQuery, logs_sql

    # Rows first: on PostgreSQL the month's partition, and its indexes, exist once a row needs them.
    await add_usage(gw, usage_rows(gw.user_id, 1, 3) + [
        UsageRecord(NOON - 10, "req_failed", gw.user_id, 1, "chat", "m", "m", "a", 503, "upstream", 0, 0, 0)])
    for query, index in ((LogsQuery(user_id=1, status_min=500, status_max=599), "usage_user_failed"),
                         (LogsQuery(key_id=1, status_min=429, status_max=429), "usage_key_failed"),
                         (LogsQuery(status_min=400, status_max=599), "usage_failed")):
        sql, args = logs_sql(query)
        walked, names, plan = await gw.app[STORE].read(
            lambda conn, s=sql, a=args, i=index: indexes_walked(conn, s, a, i))
        assert walked and walked <= names, plan
    http = await session_for(gw)
    async with http, http.get(gw.url + "/api/usage/logs?status=5xx") as r:
        assert [e["request_id"] for e in (await r.json())["data"]] == ["req_failed"]
