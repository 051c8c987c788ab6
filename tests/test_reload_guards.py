"""A reload that would strand accounts is refused; every applied reload shows its diff.

Runs the whole gateway (tests/gateway_harness.py): the check reads the real
accounts table through the app's store.
"""

from __future__ import annotations

import aiohttp
import pytest

from proxy.appkeys import CONFIG

from .gateway_harness import GatewayHarness, upstream_entry

ADMIN_ENV = "BLUESMINDS_TEST_ADMIN_KEY"
ADMIN = {"Authorization": "Bearer admin-key-for-reload-guard-tests"}


@pytest.fixture
async def harness(tmp_path, upstreams, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN["Authorization"].split()[1])
    gateway = GatewayHarness.write(
        str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)],
        admin={"key_env": ADMIN_ENV},
        plans={"test": {"rpm": 1000, "models": "*"}, "spare": {"rpm": 1}, "unused": {"rpm": 2}})
    await gateway.start(plan="test")
    yield gateway
    await gateway.stop()


async def admin_call(harness: GatewayHarness, method: str, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, harness.url + path, headers=ADMIN) as resp:
            return resp.status, await resp.json()


async def test_removing_a_plan_accounts_are_on_is_refused(harness: GatewayHarness) -> None:
    harness.sections["plans"] = {"spare": {"rpm": 1}, "unused": {"rpm": 2}}
    harness.sections["auth"]["default_plan"] = "spare"
    harness.save()
    status, body = await admin_call(harness, "POST", "/api/admin/reload")
    assert status == 400
    assert body["error"]["code"] == "config_invalid"
    assert body["error"]["message"] == (
        f"The reload was not applied; version 1 keeps serving. Problems: {harness.config_dir}: plans.test: "
        "plan 'test' was removed, but 1 account(s) are on it; move them to another plan first, or keep the plan")
    assert sorted(harness.app[CONFIG].current.plans) == ["spare", "test", "unused"]


async def test_removing_a_plan_nobody_is_on_applies_and_shows_the_diff(harness: GatewayHarness) -> None:
    del harness.sections["plans"]["unused"]
    harness.sections["plans"]["test"] = {"rpm": 999, "models": "*"}
    harness.save()
    status, body = await admin_call(harness, "POST", "/api/admin/reload")
    assert (status, body["changed"], body["version"]) == (200, True, 2)
    status, config = await admin_call(harness, "GET", "/api/admin/config")
    assert status == 200
    diff = config["last_diff"]
    assert diff["version"] == 2
    assert diff["plans"] == {"added": [], "removed": ["unused"], "changed": ["test"]}
    assert diff["upstreams"] == diff["models"] == {"added": [], "removed": [], "changed": []}
