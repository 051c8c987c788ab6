"""The logs page with captured bodies, in a real browser (Debian's chromium through
Playwright): the bodies are shown escaped and collapsed, and "Replay" re-sends one.

Skipped, with the reason, only when chromium or playwright is missing."""

from __future__ import annotations

import os
import time

import openai
import pytest

from proxy.appkeys import USAGE
from proxy.cli.accounts import create_user_and_key

from .db_access import query
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

PASSWORD = "correct horse battery"
CANARY = "sk-canary-0123456789abcdef0123"


@pytest.fixture
async def dash(tmp_path, upstreams):
    harness = GatewayHarness.write(str(tmp_path / "config"),
                                   [upstream_entry(n, f.url) for n, f in zip("abc", upstreams)],
                                   capture={"plans": ["test"], "redact": [{"pattern": r"sk-canary-[0-9a-f]+"}]})
    harness.user_id, harness.key = create_user_and_key(harness.db_settings, "tenant@example.com", PASSWORD, "test",
                                                       "e2e", bcrypt_rounds=4)
    await harness.start()
    yield harness
    await harness.stop()


async def test_the_logs_page_shows_captured_bodies_and_replays_one(dash):
    sdk = openai.AsyncOpenAI(base_url=dash.url + "/v1", api_key=dash.key, max_retries=0)
    await sdk.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "user", "content": f"<b>bold</b> and {CANARY}"}])
    await dash.app[USAGE].flush()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await (await browser.new_context()).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(dash.url + "/dashboard/login")
            await page.get_by_label("E-mail address").fill("tenant@example.com")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Log in").click()
            await page.wait_for_url(dash.url + "/dashboard")
            await page.goto(dash.url + "/dashboard/logs")

            row = page.locator("#logs-table tbody tr").first
            body = row.locator("details.capture pre").first
            await expect(body).to_be_hidden()  # collapsed until asked for
            await row.get_by_text("Detail", exact=True).click()
            await row.get_by_text("Request body", exact=True).click()
            await expect(body).to_be_visible()
            text = await body.text_content()
            assert "<b>bold</b> and [REDACTED]" in text and CANARY not in text
            assert await row.locator("details.capture b").count() == 0  # escaped, not markup
            await row.get_by_text("Response body", exact=True).click()
            await expect(row.locator("details.capture pre").nth(1)).to_contain_text('"object":"chat.completion"')

            await row.get_by_role("button", name="Replay").click()
            await expect(page.locator("[data-toast]")).to_have_text(
                "Replayed: the new request is at the top of the list.")
            deadline = time.monotonic() + 10
            while True:
                found = query(dash.db_path, "SELECT id, replay_of FROM usage ORDER BY id")
                if len(found) == 2 or time.monotonic() > deadline:
                    break
                await dash.app[USAGE].flush()
            assert found == [(1, None), (2, 1)]
            await expect(page.locator("#logs-table tbody tr")).to_have_count(2)
            assert errors == []
        finally:
            await browser.close()
