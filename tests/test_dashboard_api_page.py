"""/dashboard/api in a real browser (Debian's chromium through Playwright): it lists the
routes with their auth, fields, errors and examples, with the dashboard's nav."""

from __future__ import annotations

import os

import pytest

from .gateway_harness import GatewayHarness, upstream_entry

CHROMIUM = "/usr/bin/chromium"
try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover - the skip says so
    async_playwright = None

pytestmark = [
    pytest.mark.skipif(async_playwright is None,
                       reason="playwright is not installed; run scripts/install-browser"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing; run scripts/install-browser"),
    pytest.mark.timeout(120),
]


@pytest.fixture
async def dash(tmp_path, upstreams):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)])
    await harness.start()
    yield harness
    await harness.stop()


async def test_the_reference_page_lists_post_api_keys_with_its_fields(dash, tmp_path):
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        # Anonymous: the login page, which brings the reader back.
        await page.goto(dash.url + "/dashboard/api")
        assert page.url == dash.url + "/dashboard/login?next=%2Fdashboard%2Fapi"
        await page.get_by_label("E-mail address").fill("tenant@example.com")
        await page.get_by_label("Password").fill("correct horse battery")
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(dash.url + "/dashboard/api")

        await expect(page.get_by_role("heading", name="API reference", level=1)).to_be_visible()
        await expect(page.get_by_role("navigation", name="Dashboard")).to_be_visible()
        route = page.get_by_role("article", name="POST /api/keys", exact=True)
        await expect(route).to_contain_text("Create an API key")
        await expect(route).to_contain_text("Auth: A session")
        fields = route.get_by_role("table", name="Body fields of POST /api/keys")
        names = await fields.locator("tbody tr td:first-child").all_inner_texts()
        assert names == ["name", "scopes", "models", "tags", "limits", "cache", "expires_at", "capture", "user_id", "email"]
        await expect(fields.get_by_role("row", name="name string yes")).to_be_visible()
        errors_table = route.get_by_role("table", name="Errors of POST /api/keys")
        await expect(errors_table.get_by_role("row", name="400 unknown_parameter")).to_be_visible()
        await expect(route.get_by_role("figure", name="Example request")).to_contain_text('"laptop"')
        chat = page.get_by_role("article", name="POST /v1/chat/completions", exact=True)
        await expect(chat).to_contain_text("Also at /api/v1/chat/completions, /chat/completions.")
        await page.get_by_role("navigation", name="API sections").get_by_role("link", name="Billing").click()
        await expect(page.get_by_role("heading", name="Billing", level=2)).to_be_in_viewport()
        await page.screenshot(path=str(tmp_path / "api-reference.png"))
        assert errors == []
        await browser.close()
