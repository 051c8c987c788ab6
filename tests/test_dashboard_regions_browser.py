"""The admin page's per-region health in a real browser (Debian's chromium through
Playwright): a gateway in region eu with two eu upstreams, one us upstream and one
untagged (which serves every region), each a real fake upstream on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

from proxy.cli.accounts import create_user_and_key
from proxy.fake_upstream import start_fake_upstream

from .db_access import execute
from .gateway_harness import GatewayHarness, upstream_entry
from .test_dashboard_browser import (
    CHROMIUM,
    PASSWORD,
    async_playwright,
    log_in,
    new_page,
    table_cells,
)

if async_playwright is not None:
    from playwright.async_api import expect

pytestmark = [
    pytest.mark.skipif(async_playwright is None,
                       reason="playwright is not installed; run scripts/install-browser"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing; run scripts/install-browser"),
    pytest.mark.timeout(120),
]


@pytest.fixture
async def regional(tmp_path):
    fakes = [await start_fake_upstream(name=name) for name in ("eu1", "eu2", "us1", "any")]
    ups = [upstream_entry("eu1", fakes[0].url, region="eu"), upstream_entry("eu2", fakes[1].url, region="eu"),
           upstream_entry("us1", fakes[2].url, region="us"), upstream_entry("any", fakes[3].url)]
    harness = GatewayHarness.write(str(tmp_path / "config"), ups, server={"region": "eu"})
    create_user_and_key(harness.db_settings, "root@example.com", PASSWORD, "test", "ops", bcrypt_rounds=4)
    execute(harness.db_path, "UPDATE users SET role = 'admin' WHERE email = 'root@example.com'")
    await harness.start()
    yield harness
    await harness.stop()
    for fake in fakes:
        await fake.stop()


@pytest.fixture
async def browser():
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        await chromium.close()


async def test_admin_sees_healthy_and_total_upstreams_per_region_with_the_local_one_marked(regional, browser):
    page = await new_page(browser, regional)
    await log_in(page, regional, "root@example.com")
    await page.goto(regional.url + "/dashboard/admin")
    regions = page.get_by_role("table", name="Health by region")
    await expect(regions).to_be_visible()
    assert await table_cells(page, "#regions-table") == [
        ["eu local", "3", "3", "eu1, eu2, any"],
        ["us", "2", "2", "us1, any"],
    ]
    await expect(regions.get_by_role("row", name="eu local")).to_have_count(1)
    await expect(regions.get_by_role("row", name="us", exact=False).locator(".badge.local")).to_have_count(0)
    await expect(regions.get_by_role("columnheader")).to_have_text(
        ["Region", "Healthy", "Upstreams", "Healthy upstreams"])

    # Draining eu1 from its row: the page reloads itself; wait for that load, then read it.
    async with page.expect_navigation():
        await page.get_by_role("button", name="Drain eu1").click()
    assert await table_cells(page, "#regions-table") == [
        ["eu local", "2", "3", "eu2, any"],
        ["us", "2", "2", "us1, any"],
    ]

    # A change made elsewhere (the API) reaches the open page through its live health poll.
    response = await page.context.request.patch(regional.url + "/api/admin/servers/us1",
                                                data={"drain": True},
                                                headers={"Origin": regional.url})
    assert response.status == 200, await response.text()
    us = page.locator('#regions-table tr[data-region="us"]')
    await expect(us.locator('[data-region-field="healthy_count"]')).to_have_text("1", timeout=15_000)
    await expect(us.locator('[data-region-field="healthy"]')).to_have_text("any")
    await expect(us.locator('[data-region-field="healthy_count"]')).to_have_class("badge degraded")
    assert page.js_errors == []


async def test_a_gateway_without_regions_shows_no_region_table(tmp_path, upstreams, browser):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)])
    create_user_and_key(harness.db_settings, "root@example.com", PASSWORD, "test", "ops", bcrypt_rounds=4)
    execute(harness.db_path, "UPDATE users SET role = 'admin' WHERE email = 'root@example.com'")
    await harness.start()
    try:
        page = await new_page(browser, harness)
        await log_in(page, harness, "root@example.com")
        await page.goto(harness.url + "/dashboard/admin")
        await expect(page.locator('tr[data-server="a"]')).to_be_visible()
        await expect(page.get_by_role("table", name="Health by region")).to_have_count(0)
    finally:
        await harness.stop()
