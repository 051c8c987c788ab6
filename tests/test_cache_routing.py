"""The response cache under routing rules: the cache step runs before the rules, so its key
names the rule that matched and the model it serves. Two requests with the same body but
different facts (metadata, the tags header, another header, the key's tags) that routing
sends to different models never share an entry; a weighted split is never cached."""

from __future__ import annotations

import random

import aiohttp
import orjson
import pytest

from proxy.appkeys import FORWARDER
from proxy.fake_upstream import start_fake_upstream

from .gateway_harness import GatewayHarness, upstream_entry
from .test_cache_e2e import CHAT, MODELS, PLANS, Clock, post, upstream_calls

RULES = [
    {"name": "research", "model": "gpt-4o-mini", "when": {"metadata": {"team": "research"}}, "rewrite": "gpt-4o"},
    {"name": "eval", "model": "gpt-4o-mini", "when": {"tags": ["eval"]}, "rewrite": "gpt-4o"},
    {"name": "premium", "model": "gpt-4o-mini", "when": {"headers": {"X-Tier": "prem*"}}, "rewrite": "gpt-4o"},
    {"name": "batch-keys", "model": "gpt-4o-mini", "when": {"key_tags": ["batch"]}, "rewrite": "gpt-4o"},
    {"name": "ab", "model": "mini-ab", "split": [{"model": "gpt-4o-mini", "weight": 1},
                                                 {"model": "gpt-4o", "weight": 1}]},
]
ADMIN_KEY = "admin-key-for-cache-routing-test-0123456789"
AB_MODELS = {**MODELS, "mini-ab": {"pricing": {"input": 0.15, "output": 0.6}}}


@pytest.fixture
async def gw(tmp_path, monkeypatch):
    monkeypatch.setenv("BM_TEST_ADMIN_KEY", ADMIN_KEY)
    fake = await start_fake_upstream(name="u")
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", fake.url)], plans=PLANS,
                             models=AB_MODELS, routing=RULES, admin={"key_env": "BM_TEST_ADMIN_KEY"})
    await h.start(plan="cached", clock=Clock())
    h.fake = fake
    yield h
    await h.stop()
    await fake.stop()


async def ask(h, body=CHAT, *, key: str | None = None, **headers) -> tuple[str, str]:
    status, answer_headers, raw = await post(h, body, key=key, **headers)
    assert status == 200, raw
    return answer_headers.get("x-bluesminds-cache"), orjson.loads(raw)["model"]


@pytest.mark.parametrize("facts", [
    {"body": {**CHAT, "metadata": {"team": "research"}}},
    {"headers": {"x-bluesminds-tags": "eval"}},
    {"headers": {"X-Tier": "premium"}},
], ids=["metadata", "tags-header", "header"])
async def test_a_rule_that_rewrites_on_facts_outside_the_body_gets_its_own_entry(gw, facts):
    body, headers = facts.get("body", CHAT), facts.get("headers", {})
    assert await ask(gw) == ("MISS", "gpt-4o-mini")
    assert await ask(gw, body, **headers) == ("MISS", "gpt-4o")  # not the plain request's entry
    assert await ask(gw, body, **headers) == ("HIT", "gpt-4o")
    assert await ask(gw) == ("HIT", "gpt-4o-mini")
    assert upstream_calls(gw.fake) == 2


async def test_the_same_rule_matched_by_other_facts_shares_its_entry(gw):
    """`metadata` stays out of the key: what matters is which rule it makes match."""
    research = {**CHAT, "metadata": {"team": "research", "run": "1"}}
    assert await ask(gw, research) == ("MISS", "gpt-4o")
    assert await ask(gw, {**CHAT, "metadata": {"team": "research", "run": "2"}}) == ("HIT", "gpt-4o")
    assert await ask(gw, {**CHAT, "metadata": {"team": "sales"}}) == ("MISS", "gpt-4o-mini")
    assert upstream_calls(gw.fake) == 2


async def test_two_keys_of_one_account_with_other_tags_do_not_share_an_entry(gw):
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/api/keys", json={"name": "batch", "tags": ["batch"], "user_id": gw.user_id},
                                headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
            assert resp.status == 201, await resp.text()
            batch_key = (await resp.json())["key"]
    assert await ask(gw) == ("MISS", "gpt-4o-mini")
    assert await ask(gw, key=batch_key) == ("MISS", "gpt-4o")  # same account, same body, another rule
    assert await ask(gw, key=batch_key) == ("HIT", "gpt-4o")
    assert await ask(gw) == ("HIT", "gpt-4o-mini")
    assert upstream_calls(gw.fake) == 2


async def test_a_weighted_split_is_never_cached(gw):
    gw.app[FORWARDER].router.rng = random.Random(7)
    expected_rng = random.Random(7)
    served = []
    for _ in range(12):
        cache, model = await ask(gw, {**CHAT, "model": "mini-ab"})
        assert cache is None  # neither a hit nor a miss: the cache was not consulted
        served.append(model)
    assert upstream_calls(gw.fake) == 12
    assert served == [("gpt-4o-mini", "gpt-4o")[expected_rng.random() >= 0.5] for _ in range(12)]
