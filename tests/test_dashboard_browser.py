"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a
real gateway in front of real fake upstreams: sign up, keys, the SDK, logs, usage,
export, revoke, admin, and the security and keyboard rules of DESIGN.md's Dashboard.

Skipped, with the reason, only when chromium or playwright is missing;
`scripts/install-browser` installs both.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from pathlib import Path

import openai
import pytest
from aiohttp import web

from proxy.cli.accounts import create_user_and_key

from .db_access import execute
from .gateway_harness import GatewayHarness, upstream_entry

CHROMIUM = "/usr/bin/chromium"
try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # pragma: no cover - the skip says so
    async_playwright = None

pytestmark = [
    pytest.mark.skipif(async_playwright is None,
                       reason="playwright is not installed; run scripts/install-browser"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing; run scripts/install-browser"),
    pytest.mark.timeout(180),
]

PASSWORD = "correct horse battery"
# 2026-03-15T12:00:00Z: pages compute "today" and "this month" from the gateway's clock.
BASE_TIME = 1773576000.0
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def shifted_clock():
    started = time.time()
    return lambda: BASE_TIME + (time.time() - started)


@pytest.fixture
async def dash(tmp_path, upstreams):
    """A gateway with three fake upstreams, a tenant (from the harness) and an admin."""
    harness = GatewayHarness.write(str(tmp_path / "config"),
                                   [upstream_entry(name, fake.url)
                                    for name, fake in zip("abc", upstreams)],
                                   auth={"signup": "open"})  # the product default is invite-only
    # Both accounts exist from the gateway's "now", so billing counts them in its month.
    harness.user_id, harness.key = create_user_and_key(harness.db_settings, "tenant@example.com", PASSWORD, "test",
                                                       "e2e", bcrypt_rounds=4, clock=lambda: BASE_TIME)
    create_user_and_key(harness.db_settings, "root@example.com", PASSWORD, "test", "ops", bcrypt_rounds=4,
                        clock=lambda: BASE_TIME)
    execute(harness.db_path, "UPDATE users SET role = 'admin' WHERE email = 'root@example.com'")
    await harness.start(clock=shifted_clock())
    yield harness
    await harness.stop()


@pytest.fixture
async def browser():
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        await chromium.close()


class Recorder:
    """Every request a page makes, to prove none leaves the gateway's origin."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))

    def foreign(self, origin: str) -> list[str]:
        return [url for url in self.urls if not url.startswith(origin + "/")]


async def new_page(browser, dash, viewport=LAPTOP, **options):
    context = await browser.new_context(viewport=viewport, accept_downloads=True, **options)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.js_errors = errors
    return page


async def log_in(page: Page, dash, email: str, password: str = PASSWORD) -> None:
    await page.goto(dash.url + "/dashboard/login")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(dash.url + "/dashboard")


async def api_get(page: Page, dash, path: str) -> dict:
    """The JSON API with the page's own session cookie, as the dashboard's JS would call it."""
    response = await page.context.request.get(dash.url + path)
    assert response.status == 200, await response.text()
    return await response.json()


async def wait_for_requests(page: Page, dash, count: int) -> dict:
    """Usage rows are batched; poll the stats, bounded, until `count` requests are in."""
    deadline = time.monotonic() + 10
    while True:
        stats = await api_get(page, dash, "/api/usage/stats?group_by=day")
        if stats["total"]["requests"] >= count or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


async def table_cells(page: Page, selector: str) -> list[list[str]]:
    return await page.eval_on_selector_all(
        f"{selector} tbody tr",
        "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")


def nav(page: Page, name: str):
    return page.get_by_role("navigation", name="Dashboard").get_by_role("link", name=name, exact=True)


def number(text: str) -> float:
    return float(text.replace(",", "").replace("$", "").replace(" ms", ""))


async def shoot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(path), full_page=True)
    return path


# -- the tenant's journey ---------------------------------------------------------------


async def test_tenant_journey_signup_key_sdk_logs_usage_export_revoke(dash, browser, tmp_path):
    page = await new_page(browser, dash)
    requests = Recorder(page)

    # An anonymous visit ends on the login page.
    await page.goto(dash.url + "/dashboard/usage")
    assert page.url == dash.url + "/dashboard/login?next=%2Fdashboard%2Fusage"
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()

    await page.get_by_role("link", name="Create an account").click()
    await page.get_by_label("E-mail address").fill("new.user@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await page.wait_for_url(dash.url + "/dashboard")
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    await nav(page, "API keys").click()
    await page.get_by_label("Name", exact=True).fill("sdk laptop")
    await page.get_by_role("button", name="Create key").click()
    secret_box = page.get_by_label("New API key")
    await expect(secret_box).to_be_visible()
    secret = await secret_box.input_value()
    assert secret.startswith("bm-")

    client = openai.AsyncOpenAI(base_url=dash.url + "/v1", api_key=secret, max_retries=0)
    request_ids = []
    for words in ("hello there", "one two three", "four"):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": words}])
        request_ids.append(raw.headers["x-request-id"])
    stats = await wait_for_requests(page, dash, 3)
    total = stats["total"]
    assert total["requests"] == 3

    # The secret is shown once: after the page reloads, only the prefix remains.
    await page.get_by_role("button", name="Done").click()
    await expect(page.locator("#keys-table")).to_contain_text("sdk laptop")
    assert secret not in await page.content()
    assert secret[:15] in await page.content()  # "bm-" + the lookup id is the shown prefix

    # Logs: every request, with its x-request-id.
    await nav(page, "Logs").click()
    logs = await table_cells(page, "#logs-table")
    assert [row[1] for row in logs] == list(reversed(request_ids))
    assert {row[2] for row in logs} == {"gpt-4o-mini"}
    assert sum(number(row[7]) for row in logs) == total["total_tokens"]

    # Export CSV: exactly the table's rows.
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Export CSV").click()
    download = await download_info.value
    exported = list(csv.reader(io.StringIO(Path(await download.path()).read_text(encoding="utf-8"))))
    headers = await page.eval_on_selector_all("#logs-table thead th", "ths => ths.map(t => t.textContent.trim())")
    assert exported[0] == [h for h in headers if h.lower() != "detail"]
    assert exported[1:] == [row[:-1] for row in logs]

    # Overview and usage show the numbers /api/usage/stats gives.
    await nav(page, "Overview").click()
    today = (await table_cells(page, "#summary-table"))[0]
    assert [number(c) for c in today[1:3]] == [total["requests"], total["total_tokens"]]
    assert number(today[3]) == pytest.approx(total["cost_usd"], abs=1e-6)
    await nav(page, "Usage").click()
    by_day = {row[0]: row for row in await table_cells(page, "#by-day-table")}
    assert number(by_day["2026-03-15"][1]) == total["requests"]
    assert number(by_day["2026-03-15"][2]) == total["total_tokens"]
    assert len(by_day) == 30
    by_model = await table_cells(page, "#by-model-table")
    assert by_model[0][0] == "gpt-4o-mini" and number(by_model[0][2]) == total["requests"]
    await expect(page.locator("figure[data-chart] canvas").first).to_be_visible()

    # Revoke in the browser; the SDK's next call is refused.
    await nav(page, "API keys").click()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Revoke sdk laptop").click()
    await expect(page.locator("#keys-table .badge")).to_have_text("revoked")
    with pytest.raises(openai.AuthenticationError) as refused:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 401
    await client.close()

    assert requests.foreign(dash.url) == []
    assert page.js_errors == []


async def test_tenant_gets_403_on_admin_and_admin_nav_is_hidden(dash, browser):
    page = await new_page(browser, dash)
    await log_in(page, dash, "tenant@example.com")
    nav = page.get_by_role("navigation", name="Dashboard")
    await expect(nav.get_by_role("link")).to_have_text(
        ["Overview", "API keys", "Usage", "Logs", "Billing", "Settings", "API reference"])
    response = await page.goto(dash.url + "/dashboard/admin")
    assert response.status == 403
    await expect(page.get_by_role("heading", name="Not allowed here")).to_be_visible()


# -- the administrator -------------------------------------------------------------------


async def test_admin_drains_and_enables_a_server_and_manages_users(dash, browser, tmp_path, upstreams):
    page = await new_page(browser, dash)
    requests = Recorder(page)
    await log_in(page, dash, "root@example.com")
    await nav(page, "Admin").click()
    row = page.locator('tr[data-server="a"]')
    await expect(row.locator("[data-field=state]")).to_have_text("healthy")

    await page.get_by_role("button", name="Drain a").click()
    await expect(page.get_by_role("button", name="Enable a")).to_be_visible()
    health = {r["name"]: r["state"] for r in (await api_get(page, dash, "/api/admin/health"))["data"]}
    assert health == {"a": "draining", "b": "healthy", "c": "healthy"}
    await expect(row.locator("[data-field=state]")).to_have_text("draining")
    await shoot(page, tmp_path, "laptop-admin-draining")

    await page.get_by_role("button", name="Enable a").click()
    await expect(page.get_by_role("button", name="Drain a")).to_be_visible()
    health = {r["name"]: r["state"] for r in (await api_get(page, dash, "/api/admin/health"))["data"]}
    assert health["a"] == "healthy"

    # A server the API added is the gateway's to change: its weight is set from the page.
    added = await page.context.request.post(dash.url + "/api/admin/servers", headers={"Origin": dash.url},
                                            data={"name": "d", "url": upstreams[0].url, "models": "*"})
    assert added.status == 201, await added.text()
    await page.reload()
    await page.get_by_label("Weight of d", exact=True).fill("5")
    async with page.expect_response(lambda r: r.request.method == "PATCH" and "/api/admin/servers/" in r.url) as patch:
        await page.get_by_role("button", name="Set weight of d").click()
    assert (await patch.value).status == 200
    await expect(page.get_by_label("Weight of d", exact=True)).to_have_value("5")
    servers = {s["name"]: s["weight"] for s in (await api_get(page, dash, "/api/admin/servers"))["data"]}
    assert servers == {"a": 1, "b": 1, "c": 1, "d": 5}

    # Users: the tenant's plan and role, and disabling the account.
    tenant = page.locator("#users-table tr", has_text="tenant@example.com")
    await tenant.get_by_label("Role of tenant@example.com", exact=True).select_option("admin")
    await tenant.get_by_role("button", name="Save").click()
    await expect(page.locator("#users-table tr", has_text="tenant@example.com")
                 .get_by_label("Role of tenant@example.com", exact=True)).to_have_value("admin")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Disable tenant@example.com").click()
    await expect(page.locator("#users-table tr", has_text="tenant@example.com").locator(".badge")
                 ).to_have_text("disabled")
    users = (await api_get(page, dash, "/api/admin/users?email=tenant"))["data"]
    assert [(u["role"], u["disabled"]) for u in users] == [("admin", True)]
    await expect(page.get_by_role("heading", name="Last reload error")).to_be_visible()
    assert requests.foreign(dash.url) == []
    assert page.js_errors == []


# -- security ---------------------------------------------------------------------------------


async def test_cross_site_form_post_creates_nothing(dash, browser):
    """A page on another origin posts a form at /api/keys with the victim's cookie attached
    (127.0.0.1 on another port is same-site, so SameSite=Lax does not stop it): the
    gateway's CSRF check must."""
    attack = web.Application()
    form = (f'<form id="f" method="post" action="{dash.url}/api/keys" enctype="text/plain">'
            '<input name=\'{"name": "evil", "x": "\' value=\'"}\'></form>'
            '<script>document.getElementById("f").submit()</script>')

    async def attacker_page(request: web.Request) -> web.Response:
        return web.Response(text=form, content_type="text/html")

    attack.router.add_get("/", attacker_page)
    runner = web.AppRunner(attack)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        page = await new_page(browser, dash)
        await log_in(page, dash, "tenant@example.com")
        async with page.expect_response(lambda r: r.url == dash.url + "/api/keys") as answer:
            await page.goto(f"http://127.0.0.1:{port}/")
        response = await answer.value
        # A form cannot send JSON, and the API takes nothing else with a cookie.
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "unsupported_content_type"
        keys = (await api_get(page, dash, "/api/keys"))["data"]
        assert [k["name"] for k in keys] == ["e2e"]
    finally:
        await runner.cleanup()


async def test_a_hostile_key_name_shows_as_text(dash, browser):
    page = await new_page(browser, dash)
    dialogs = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await log_in(page, dash, "tenant@example.com")
    await page.goto(dash.url + "/dashboard/api-keys")
    hostile = "<img src=x onerror=alert(1)>"
    await page.get_by_label("Name", exact=True).fill(hostile)
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_label("New API key")).to_be_visible()
    await page.get_by_role("button", name="Done").click()
    await expect(page.locator("#keys-table tbody th").nth(1)).to_have_text(hostile)
    assert await page.locator("#keys-table img").count() == 0
    for path in ("/dashboard/usage", "/dashboard/logs"):
        await page.goto(dash.url + path)
        await expect(page.locator("#key_id option", has_text=hostile)).to_have_text(f"{hostile} (#3)")
        assert await page.locator("main img").count() == 0
    assert dialogs == []


async def test_a_key_created_with_the_keyboard_alone(dash, browser):
    page = await new_page(browser, dash)
    await page.goto(dash.url + "/dashboard/login")
    # The e-mail field has focus on arrival; Tab, type, Enter from there.
    await expect(page.get_by_label("E-mail address")).to_be_focused()
    await page.keyboard.type("tenant@example.com")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(dash.url + "/dashboard")

    async def tab_to(predicate: str, limit: int = 40) -> None:
        for _ in range(limit):
            await page.keyboard.press("Tab")
            if await page.evaluate(predicate):
                return
        raise AssertionError(f"never reached {predicate} with Tab")

    await tab_to("document.activeElement.textContent.trim() === 'API keys'")
    await page.keyboard.press("Enter")
    await page.wait_for_url(dash.url + "/dashboard/api-keys")
    await tab_to("document.activeElement.id === 'key-name'")
    await page.keyboard.type("typed only")
    await tab_to("document.activeElement.textContent.trim() === 'Create key'")
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("New API key")).to_be_focused()
    secret = await page.get_by_label("New API key").input_value()
    assert secret.startswith("bm-")
    keys = (await api_get(page, dash, "/api/keys"))["data"]
    assert [k["name"] for k in keys] == ["e2e", "typed only"]


# -- every page, laptop and phone ---------------------------------------------------------


@pytest.mark.parametrize("viewport_name", ["laptop", "phone"])
async def test_every_page_renders_cleanly_and_is_saved_as_a_screenshot(dash, browser, tmp_path,
                                                                       viewport_name):
    viewport = LAPTOP if viewport_name == "laptop" else PHONE
    async with openai.AsyncOpenAI(base_url=dash.url + "/v1", api_key=dash.key, max_retries=0) as client:
        for model in ("gpt-4o-mini", "gpt-4o-mini"):
            await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        await client.embeddings.create(model="text-embedding-3-small", input="some words to embed")
    page = await new_page(browser, dash, viewport=viewport)
    requests = Recorder(page)
    await page.goto(dash.url + "/dashboard/login")
    await shoot(page, tmp_path, f"{viewport_name}-login")
    await page.goto(dash.url + "/dashboard/signup")
    await shoot(page, tmp_path, f"{viewport_name}-signup")
    await log_in(page, dash, "root@example.com")
    await wait_for_requests(page, dash, 3)
    shots = []
    for name in ("", "api-keys", "usage", "logs", "billing", "settings", "admin"):
        response = await page.goto(dash.url + "/dashboard" + (f"/{name}" if name else ""))
        assert response.status == 200, name
        headers = response.headers
        assert headers["content-security-policy"].startswith("default-src 'self'; frame-ancestors 'none'")
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert await page.locator("nav a").count() >= 7
        # Nothing wider than the screen except inside a scrolling table.
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"/{name} scrolls sideways by {overflow}px"
        shots.append(await shoot(page, tmp_path, f"{viewport_name}-{name or 'overview'}"))
    assert all(path.stat().st_size > 5000 for path in shots)
    assert requests.foreign(dash.url) == []
    assert page.js_errors == []
    print(f"\nscreenshots in {tmp_path / 'screenshots'}")
