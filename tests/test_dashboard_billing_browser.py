"""The dashboard's billing, settings and admin pages in a real browser (Debian's chromium,
driven by Playwright) against a real gateway with billing (the fake Creem on 127.0.0.1)
and webhooks (a real receiver on 127.0.0.1): invoices with their lines after a past month
is generated, change plan through checkout, a webhook's secret shown once and its test
delivery, the referral link, an admin generating invoices, and what a tenant may not see.

The gateway's clock is injected (billing_support.Clock): usage lands on 2026-03-10, and
the clock moves to 2026-04-10, past March's end and its grace, before anyone logs in.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.appkeys import USAGE

from .billing_support import (
    PASSWORD,
    Clock,
    add_account,
    fake_creem,
    query,
    start_gateway,
    ts,
    usage_row,
)
from .db_access import execute
from .test_dashboard_browser import (
    CHROMIUM,
    LAPTOP,
    PHONE,
    Recorder,
    async_playwright,
    log_in,
    new_page,
    shoot,
    table_cells,
)
from .test_webhooks_support import Receiver, set_env, webhooks_section

if async_playwright is not None:
    from playwright.async_api import expect

pytestmark = [
    pytest.mark.skipif(async_playwright is None,
                       reason="playwright is not installed; run scripts/install-browser"),
    pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing; run scripts/install-browser"),
    pytest.mark.timeout(180),
]

MARCH_10 = ts("2026-03-10T12:00")
APRIL_10 = ts("2026-04-10T12:00")  # past March's end plus the 3-day grace: invoices are final


@pytest.fixture
async def creem():
    fake = await fake_creem()
    yield fake
    await fake.stop()


async def sent_tests(receiver, n: int) -> list:
    """The first `n` test sends the receiver got; the system endpoint shares it, and an
    upstream.down of its own may arrive in between."""
    count = n
    while True:
        sends = [r for r in await receiver.wait_for(count) if b'"webhook.test"' in r.body]
        if len(sends) >= n:
            return sends[:n]
        count += 1


@pytest.fixture
async def receiver():
    hooks = await Receiver().start()
    yield hooks
    await hooks.stop()


@pytest.fixture
async def gw(tmp_path, monkeypatch, upstreams, creem, receiver):
    set_env(monkeypatch)  # the webhook encryption key and the YAML endpoint's secret
    clock = Clock(MARCH_10)
    system_endpoint = {"name": "ops", "url": receiver.url, "events": ["upstream.down"],
                       "secret_env": "BM_TEST_YAML_SECRET"}
    harness = await start_gateway(
        tmp_path, monkeypatch, upstreams[0].url, clock, creem=creem,
        auth={"signup": "open", "signups_per_hour": 1000},
        # The receiver is on 127.0.0.1 over http: both are refused unless allowed.
        webhooks=webhooks_section(allow_networks=["127.0.0.0/8"], endpoints=[system_endpoint]))
    harness.clock = clock
    harness.other_id = add_account(harness, "other@example.com", "test", clock)
    admin_id = add_account(harness, "root@example.com", "test", clock)
    execute(harness.db_path, "UPDATE users SET role = 'admin' WHERE id = ?", (admin_id,))
    yield harness
    await harness.stop()


@pytest.fixture
async def browser():
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        await chromium.close()


async def _march_usage(gw) -> None:
    """Three requests of the tenant's and one of the other account's, on 2026-03-10."""
    recorder = gw.app[USAGE]
    for i in range(3):
        recorder.record(usage_row(MARCH_10 + i, gw.user_id, "gpt-4o-mini", 1000, 500, 900_000, f"t{i}"))
    recorder.record(usage_row(MARCH_10, gw.other_id, "gpt-4o-mini", 10, 5, 9_000, "o1"))
    deadline = time.monotonic() + 10
    while query(gw.db_path, "SELECT COUNT(*) FROM usage")[0][0] < 4:  # the recorder flushes in batches
        assert time.monotonic() < deadline, "usage rows never reached the database"
        await asyncio.sleep(0.025)


async def _reload_until(page, locator, text: str, tries: int = 40) -> None:
    """A delivery is made by the background deliverer: reload, bounded, until the page shows it."""
    for _ in range(tries):
        if text in await locator.inner_text():
            return
        await asyncio.sleep(0.05)
        await page.reload()
    raise AssertionError(f"{text!r} never appeared: {await locator.inner_text()!r}")


async def test_admin_generates_invoices_and_a_tenant_sees_only_their_own_with_lines(gw, browser, tmp_path):
    await _march_usage(gw)
    gw.clock.now = APRIL_10

    admin = await new_page(browser, gw)
    admin_requests = Recorder(admin)
    await log_in(admin, gw, "root@example.com")
    await admin.goto(gw.url + "/dashboard/admin")
    await expect(admin.locator("#admin-invoices-table")).to_contain_text("No invoices match.")
    await admin.get_by_label("Month to invoice (UTC)").fill("2026-03")
    async with admin.expect_response(lambda r: r.url.endswith("/api/admin/invoices/generate")) as answer:
        await admin.get_by_role("button", name="Generate invoices").click()
    assert (await answer.value).status == 200  # its body is gone with the reload that follows
    await expect(admin.get_by_role("status")).to_have_text("Invoices generated.")
    await expect(admin.locator("#admin-invoices-table tbody tr")).to_have_count(3)
    rows = await table_cells(admin, "#admin-invoices-table")
    assert sorted(row[1] for row in rows) == [f"#{gw.user_id}", f"#{gw.other_id}", "#3"]
    assert {(row[2], row[4]) for row in rows} == {("2026-03", "final")}
    await shoot(admin, tmp_path, "laptop-admin-invoices")
    assert admin_requests.foreign(gw.url) == []
    assert admin.js_errors == []

    invoices = {r[0]: r[1] for r in query(gw.db_path, "SELECT account_id, id FROM invoices")}
    for viewport_name, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        page = await new_page(browser, gw, viewport=viewport)
        requests = Recorder(page)
        await log_in(page, gw, "tenant@example.com")
        await page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Billing").click()
        await expect(page.locator("#plan-card .plan-name")).to_have_text("test")
        listed = await table_cells(page, "#invoices-table")
        api_list = await (await page.context.request.get(gw.url + "/api/billing/invoices")).json()
        [mine] = api_list["data"]
        assert listed == [[mine["number"], "2026-03", "test", "final", f"{mine['total']} USD"]]
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"billing scrolls sideways by {overflow}px"
        await shoot(page, tmp_path, f"{viewport_name}-billing-with-invoice")

        await page.get_by_role("link", name=f"Invoice {mine['number']}").click()
        await page.wait_for_url(gw.url + f"/dashboard/billing/invoices/{invoices[gw.user_id]}")
        detail = await (await page.context.request.get(gw.url + f"/api/billing/invoices/{mine['id']}")).json()
        assert detail["lines"], detail
        lines = await table_cells(page, "#invoice-lines")
        assert [(row[0], row[4]) for row in lines] == [(ln["description"], ln["amount"]) for ln in detail["lines"]]
        usage_line = next(row for row in lines if row[1] == "gpt-4o-mini")
        assert (usage_line[2], usage_line[3]) == ("3", "4,500")
        await expect(page.locator("#invoice-total")).to_have_text(f"{detail['total']} USD")
        await shoot(page, tmp_path, f"{viewport_name}-invoice")
        assert requests.foreign(gw.url) == []
        assert page.js_errors == []

    # Another account's invoice is not there for the tenant, and neither is the admin page.
    response = await page.goto(gw.url + f"/dashboard/billing/invoices/{invoices[gw.other_id]}")
    assert response.status == 404
    await expect(page.get_by_role("alert")).to_have_text(f"No invoice {invoices[gw.other_id]}.")
    response = await page.goto(gw.url + "/dashboard/admin")
    assert response.status == 403
    await expect(page.get_by_role("heading", name="Not allowed here")).to_be_visible()


async def test_change_plan_goes_to_the_checkout_page_creem_answered(gw, browser, creem, tmp_path):
    page = await new_page(browser, gw)
    await log_in(page, gw, "tenant@example.com")
    await page.goto(gw.url + "/dashboard/billing")
    offers = page.locator("#change-plan .plan-offer")
    # Only "pro" has a Creem product; "basic" has a price but cannot be bought here.
    await expect(offers).to_have_count(1)
    await expect(offers).to_contain_text("30.00 USD per month · 1,000 tokens included")
    await shoot(page, tmp_path, "laptop-billing-change-plan")
    await page.get_by_role("button", name="Change to pro").click()
    await page.wait_for_url(creem.url + "/checkout/**")
    [checkout] = creem.checkouts.values()
    assert page.url == checkout["checkout_url"]
    assert checkout["product"] == "prod_pro"
    orders = query(gw.db_path, "SELECT account_id, plan, status, checkout_url FROM billing_orders")
    assert orders == [(gw.user_id, "pro", "open", checkout["checkout_url"])]


@pytest.mark.parametrize("viewport_name", ["laptop", "phone"])
async def test_a_webhook_made_in_the_browser_shows_its_secret_once_and_its_test_delivery(
        gw, browser, receiver, tmp_path, viewport_name):
    page = await new_page(browser, gw, viewport=LAPTOP if viewport_name == "laptop" else PHONE)
    requests = Recorder(page)
    await log_in(page, gw, "tenant@example.com")
    await page.goto(gw.url + "/dashboard/settings")
    await expect(page.locator("#webhooks-table")).to_contain_text("No webhooks yet")
    hook_url = receiver.url.replace("/hook", "/tenant")
    await page.get_by_label("Endpoint URL").fill(hook_url)
    await page.get_by_label("Events").select_option(["key.created", "invoice.finalized"])
    await page.get_by_role("button", name="Add webhook").click()
    secret_box = page.get_by_label("Webhook signing secret")
    await expect(secret_box).to_be_focused()
    secret = await secret_box.input_value()
    assert secret.startswith("whsec_")
    await shoot(page, tmp_path, f"{viewport_name}-settings-webhook-secret")

    # Done, Retry, Disable and Enable reload the page from its own script once the API has
    # answered: the test waits for that load before it reads the page or reloads it itself,
    # or its reload races the page's and Playwright's target is swapped under it.
    async with page.expect_navigation():
        await page.get_by_role("button", name="Done").click()
    row = page.locator("#webhooks-table tbody tr", has_text=hook_url)
    await expect(row.locator(".badge")).to_have_text("active")
    await expect(row.locator("td").first).to_have_text("invoice.finalized, key.created")
    assert secret not in await page.content()
    await page.reload()
    assert secret not in await page.content()
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"settings scrolls sideways by {overflow}px"
    await shoot(page, tmp_path, f"{viewport_name}-settings")

    await page.get_by_role("button", name=f"Send test to {hook_url}").click()
    await page.wait_for_url(gw.url + "/dashboard/settings/webhooks/*")
    [got] = await sent_tests(receiver, 1)
    assert got.headers["webhook-id"]
    table = page.locator("#deliveries-table")
    await _reload_until(page, table, "succeeded")
    [delivery] = await table_cells(page, "#deliveries-table")
    assert delivery[0].startswith("webhook.test")
    assert (delivery[2], delivery[3].split()[0], delivery[4]) == ("succeeded", "1", "200")
    await shoot(page, tmp_path, f"{viewport_name}-webhook-deliveries")

    # Retry sends it again: a second attempt, a second request at the receiver.
    async with page.expect_navigation():
        await page.get_by_role("button", name="Retry delivery").click()
    await expect(page.get_by_role("status")).to_have_text("Delivery queued again.")
    await sent_tests(receiver, 2)
    await _reload_until(page, table.locator("td.num"), "2")

    # Disable says why; enable; delete.
    async with page.expect_navigation():
        await page.get_by_role("button", name="Disable", exact=True).click()
    await expect(page.locator("#endpoint-state")).to_have_text("disabled")
    await expect(page.locator("main")).to_contain_text("disabled through the API (since 2026-03-10 12:00:00 UTC)")
    await expect(page.get_by_role("button", name="Retry delivery")).to_have_count(0)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Enable", exact=True).click()
    await expect(page.locator("#endpoint-state")).to_have_text("active")
    await page.goto(gw.url + "/dashboard/settings")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name=f"Delete {hook_url}").click()
    await expect(page.locator("#webhooks-table")).to_contain_text("No webhooks yet")
    assert requests.foreign(gw.url) == []
    assert page.js_errors == []


async def test_the_referral_link_signs_up_an_account_the_referrer_is_recorded_for(gw, browser):
    page = await new_page(browser, gw)
    await log_in(page, gw, "tenant@example.com")
    await page.goto(gw.url + "/dashboard/settings")
    [(code,)] = query(gw.db_path, "SELECT code FROM referral_codes WHERE account_id = ?", (gw.user_id,))
    link = page.get_by_label("Referral link", exact=True)
    await expect(link).to_have_value(f"{gw.url}/dashboard/signup?ref={code}")
    await expect(page.locator("#referral code")).to_have_text(code)

    newcomer = await new_page(browser, gw)
    await newcomer.goto(await link.input_value())
    await expect(newcomer.locator("form[data-signup]")).to_contain_text(f"Referred with code {code}")
    await newcomer.get_by_label("E-mail address").fill("friend@example.com")
    await newcomer.get_by_label("Password").fill(PASSWORD)
    await newcomer.get_by_role("button", name="Sign up").click()
    await newcomer.wait_for_url(gw.url + "/dashboard")
    [(friend,)] = query(gw.db_path, "SELECT id FROM users WHERE email = 'friend@example.com'")
    assert query(gw.db_path, "SELECT referred_id, referrer_id FROM referrals") == [(friend, gw.user_id)]
    await page.reload()
    await expect(page.locator("#referral")).to_contain_text("1 accounts referred")
    assert newcomer.js_errors == [] and page.js_errors == []


async def test_admin_sees_the_deliveries_of_the_system_endpoint(gw, browser, receiver, tmp_path):
    page = await new_page(browser, gw)
    await log_in(page, gw, "root@example.com")
    await page.goto(gw.url + "/dashboard/admin")
    section = page.locator("#system-webhooks")
    await expect(section.get_by_role("heading", name="ops")).to_be_visible()
    await expect(section).to_contain_text("No deliveries yet.")
    await section.get_by_role("link", name="ops").click()
    async with page.expect_navigation():  # the page moves on once the test send is queued
        await page.get_by_role("button", name="Send test").click()
    await receiver.wait_for(1)
    await page.goto(gw.url + "/dashboard/admin")
    await _reload_until(page, section, "succeeded")
    [delivery] = await table_cells(page, "#system-webhooks table")
    assert (delivery[0], delivery[2], delivery[4]) == ("webhook.test", "succeeded", "200")
    await shoot(page, tmp_path, "laptop-admin-system-webhooks")
    phone = await new_page(browser, gw, viewport=PHONE)
    await log_in(phone, gw, "root@example.com")
    await phone.goto(gw.url + "/dashboard/admin")
    overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"admin scrolls sideways by {overflow}px"
    await shoot(phone, tmp_path, "phone-admin")
    assert page.js_errors == [] and phone.js_errors == []
