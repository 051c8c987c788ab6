"""Routing rules end to end: conditions, rewrite, A/B split, fallback chains, bounds, and the
usage row that names both models; real fake upstreams on 127.0.0.1 behind a real gateway."""

from __future__ import annotations

import logging
import os
import random
import time

import aiohttp
import orjson
import pytest

from proxy.appkeys import CONFIG, FORWARDER, USAGE
from proxy.auth.keys import update_key
from proxy.cli.accounts import create_user_and_key
from proxy.fake_upstream import start_fake_upstream
from proxy.routing.rules import pick_arm

from .canned_upstream import CannedUpstream
from .db_access import opened, query
from .gateway_harness import GatewayHarness, upstream_entry

BAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_configs", "routing")

MODELS = {
    "small": {"pricing": {"input": 0.1, "output": 0.2}, "fallbacks": ["big"]},
    "big": {"pricing": {"input": 1, "output": 2}},
    "huge": {"pricing": {"input": 5, "output": 10}},
}
TWO_MODELS = {name: MODELS[name] for name in ("small", "big")}
PLANS = {"test": {"rpm": 100000, "tpm": 100000000}, "gold": {"rpm": 100000, "tpm": 100000000}}


def chat(model: str, content: str = "hi", **extra) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": content}], **extra})


async def post(gateway: GatewayHarness, body: bytes, headers: dict[str, str] | None = None):
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=body,
                                headers={**gateway.headers(), "Content-Type": "application/json",
                                         **(headers or {})}) as resp:
            return resp.status, await resp.json()


async def usage_rows(gateway: GatewayHarness) -> list[tuple]:
    await gateway.app[USAGE].flush()
    return query(gateway.db_path, "SELECT requested_model, served_model, upstream, status FROM usage "
                 "ORDER BY id")


@pytest.fixture
async def fakes():
    """Upstream a serves small, b serves big, c serves huge."""
    started = [await start_fake_upstream(name=n) for n in "abc"]
    yield started
    for fake in started:
        await fake.stop()


async def start(tmp_path, fakes, *, routing=(), models=None, retry=None, timeouts=None,
                plan: str = "test", key_tags=()) -> GatewayHarness:
    ups = [upstream_entry(name, fake.url, models=[model], **({"timeouts": timeouts} if timeouts else {}))
           for name, fake, model in zip("abc", fakes, ("small", "big", "huge"))]
    extra = {"retry": retry} if retry else {}
    harness = GatewayHarness.write(str(tmp_path / "config"), ups, models=models or MODELS, plans=PLANS,
                                   routing=list(routing), **extra)
    if key_tags:
        harness.user_id, harness.key = create_user_and_key(harness.db_settings, "tenant@example.com",
                                                           "correct horse battery", plan, "e2e", bcrypt_rounds=4)
        with opened(harness.db_path) as store:
            store.write_sync(lambda conn: update_key(conn, 1, {"tags": orjson.dumps(sorted(key_tags)).decode()},
                                                     time.time()))
    return await harness.start(plan=plan)


# -- fallback chains ------------------------------------------------------------------


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 429}, {"hang": True}])
async def test_fallback_chain_serves_from_the_next_model(tmp_path, fakes, fault):
    a, b, _ = fakes
    await a.set_fault(fault)
    gateway = await start(tmp_path, fakes, timeouts={"first_byte": "300ms"})
    try:
        status, body = await post(gateway, chat("small"))
        assert status == 200, body
        assert body["model"] == "big"  # the public name of the model that served
        assert a.stats()["requests"] == 1 and b.stats()["requests"] == 1
        assert await usage_rows(gateway) == [("small", "big", "b", 200)]
    finally:
        await gateway.stop()


async def test_access_line_names_the_served_and_the_requested_model(tmp_path, fakes, caplog):
    caplog.set_level(logging.INFO, logger="bluesminds.access")
    await fakes[0].set_fault({"status": 500})
    gateway = await start(tmp_path, fakes)
    try:
        assert (await post(gateway, chat("small"), {"x-request-id": "req-fb"}))[0] == 200
    finally:
        await gateway.stop()
    [line] = [r.getMessage() for r in caplog.records if r.name == "bluesminds.access" and "req-fb" in r.getMessage()]
    assert line.endswith(" id=req-fb model=big upstream=b requested_model=small")


async def test_stream_falls_back_before_the_first_byte(tmp_path, fakes):
    a, b, _ = fakes
    await a.set_fault({"status": 500})
    gateway = await start(tmp_path, fakes)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(gateway.url + "/v1/chat/completions", data=chat("small", stream=True),
                                    headers={**gateway.headers(), "Content-Type": "application/json"}) as resp:
                assert resp.status == 200
                text = (await resp.read()).decode()
        events = [orjson.loads(line[6:]) for line in text.splitlines()
                  if line.startswith("data: {")]
        assert {e["model"] for e in events} == {"big"}
        assert text.rstrip().endswith("data: [DONE]")
        assert b.stats()["requests"] == 1
    finally:
        await gateway.stop()


async def test_context_window_skips_a_model_before_any_upstream_call(tmp_path, fakes):
    a, b, _ = fakes
    models = {**MODELS, "small": {**MODELS["small"], "context_window": 50}}
    gateway = await start(tmp_path, fakes, models=models)
    try:
        status, body = await post(gateway, chat("small", "word " * 400))
        assert status == 200, body
        assert body["model"] == "big"
        assert a.stats()["requests"] == 0  # the first model's upstream saw nothing
        assert b.stats()["requests"] == 1
        status, body = await post(gateway, chat("small", "short"))
        assert (status, body["model"]) == (200, "small")
    finally:
        await gateway.stop()


async def test_context_window_of_every_model_exceeded_is_a_400(tmp_path, fakes):
    models = {**MODELS, "small": {**MODELS["small"], "context_window": 50},
              "big": {**MODELS["big"], "context_window": 60}}
    gateway = await start(tmp_path, fakes, models=models)
    try:
        status, body = await post(gateway, chat("small", "word " * 400))
        assert status == 400
        assert body["error"]["code"] == "context_length_exceeded"
        assert "longer than the context window of every model that could serve it (small: 50; big: 60)" \
            in body["error"]["message"]
        assert sum(f.stats()["requests"] for f in fakes) == 0
    finally:
        await gateway.stop()


async def test_upstream_context_length_error_moves_to_the_next_model(tmp_path, fakes):
    error = orjson.dumps({"error": {"message": "This model's maximum context length is 8 tokens.",
                                    "type": "invalid_request_error", "param": "messages",
                                    "code": "context_length_exceeded"}})
    canned = await CannedUpstream(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(error), error)).start()
    a, b, c = fakes
    ups = [upstream_entry("short", canned.url, models=["small"]), upstream_entry("b", b.url, models=["big"])]
    gateway = await GatewayHarness.write(str(tmp_path / "config"), ups, models=TWO_MODELS, plans=PLANS).start()
    try:
        status, body = await post(gateway, chat("small"))
        assert status == 200, body
        assert body["model"] == "big"
        assert canned.requests == 1 and b.stats()["requests"] == 1
        assert await usage_rows(gateway) == [("small", "big", "b", 200)]
    finally:
        await gateway.stop()
        await canned.stop()


async def test_attempt_cap_holds_across_the_chain(tmp_path, fakes):
    for fake in fakes:
        await fake.set_fault({"status": 500})
    routing = [{"name": "long-chain", "model": "small", "fallbacks": ["big", "huge"]}]
    gateway = await start(tmp_path, fakes, routing=routing, retry={"attempts": 2})
    try:
        status, body = await post(gateway, chat("small"))
        assert status == 502, body
        assert [f.stats()["requests"] for f in fakes] == [1, 1, 0]
    finally:
        await gateway.stop()


async def test_per_model_cap_moves_on_to_the_next_model(tmp_path):
    fakes = [await start_fake_upstream(name=n) for n in ("a1", "a2", "b")]
    for fake in fakes[:2]:
        await fake.set_fault({"status": 500})
    ups = [upstream_entry("a1", fakes[0].url, models=["small"]), upstream_entry("a2", fakes[1].url, models=["small"]),
           upstream_entry("b", fakes[2].url, models=["big"])]
    gateway = await GatewayHarness.write(str(tmp_path / "config"), ups, models=TWO_MODELS, plans=PLANS,
                                         retry={"attempts": 3, "per_model": 1}).start()
    try:
        status, body = await post(gateway, chat("small"))
        assert (status, body["model"]) == (200, "big")
        assert sorted(f.stats()["requests"] for f in fakes[:2]) == [0, 1]  # one try on small, then big
    finally:
        await gateway.stop()
        for fake in fakes:
            await fake.stop()


async def test_one_deadline_covers_the_whole_chain(tmp_path, fakes):
    for fake in fakes:
        await fake.set_fault({"hang": True})
    routing = [{"name": "long-chain", "model": "small", "fallbacks": ["big", "huge"]}]
    gateway = await start(tmp_path, fakes, routing=routing, timeouts={"first_byte": "10s"},
                          retry={"attempts": 3, "deadline": "400ms"})
    try:
        started = time.monotonic()
        status, body = await post(gateway, chat("small"))
        elapsed = time.monotonic() - started
        assert status == 504, body
        assert body["error"]["code"] == "deadline_exceeded"
        assert body["error"]["message"].startswith("The request's deadline of 0.4s passed after 1 attempt")
        assert elapsed < 2.0  # not 3 × 10 s
    finally:
        await gateway.stop()


# -- conditions -------------------------------------------------------------------------


CONDITION_RULES = [
    {"name": "by-plan", "model": "small", "when": {"plan": "gold"}, "rewrite": "huge"},
    {"name": "by-key-tag", "model": "small", "when": {"key_tags": ["batch"]}, "rewrite": "huge"},
    {"name": "by-metadata", "model": "small", "when": {"metadata": {"team": "research"}}, "rewrite": "huge"},
    {"name": "by-tag-header", "model": "small", "when": {"tags": ["eval"]}, "rewrite": "huge"},
    {"name": "by-header", "model": "small", "when": {"headers": {"X-Tier": "prem*"}}, "rewrite": "huge"},
    {"name": "by-model", "model": "bi?", "rewrite": "huge"},
]


@pytest.mark.parametrize("body, headers, served", [
    (chat("small"), {}, "small"),
    (chat("small", metadata={"team": "research"}), {}, "huge"),
    (chat("small", metadata={"team": "sales"}), {}, "small"),
    (chat("small"), {"x-bluesminds-tags": "x, eval"}, "huge"),
    (chat("small"), {"x-bluesminds-tags": "evaluation"}, "small"),
    (chat("small", metadata={"purpose": "eval"}), {}, "huge"),  # a metadata value counts as a tag
    (chat("small"), {"X-Tier": "premium"}, "huge"),
    (chat("small"), {"X-Tier": "basic"}, "small"),
    (chat("big"), {}, "huge"),
    (chat("huge"), {}, "huge"),
])
async def test_each_condition_kind_matches_or_not(tmp_path, fakes, body, headers, served):
    gateway = await start(tmp_path, fakes, routing=CONDITION_RULES)
    try:
        status, answer = await post(gateway, body, headers)
        assert (status, answer["model"]) == (200, served), answer
    finally:
        await gateway.stop()


@pytest.mark.parametrize("plan, key_tags, served", [
    ("gold", (), "huge"), ("test", (), "small"), ("test", ("batch", "x"), "huge"), ("test", ("x",), "small")])
async def test_plan_and_key_tag_conditions(tmp_path, fakes, plan, key_tags, served):
    gateway = await start(tmp_path, fakes, routing=CONDITION_RULES, plan=plan, key_tags=key_tags or ("x",))
    try:
        status, answer = await post(gateway, chat("small"))
        assert (status, answer["model"]) == (200, served), answer
        assert await usage_rows(gateway) == [("small", served, "abc"[["small", "big", "huge"].index(served)], 200)]
    finally:
        await gateway.stop()


async def test_rule_pins_an_upstream_group(tmp_path):
    fakes = [await start_fake_upstream(name=n) for n in ("p", "q")]
    ups = [upstream_entry("p", fakes[0].url), upstream_entry("q", fakes[1].url)]
    routing = [{"name": "eval-to-q", "when": {"tags": ["eval"]}, "upstreams": ["q"]}]
    gateway = await GatewayHarness.write(str(tmp_path / "config"), ups, plans=PLANS, routing=routing).start()
    try:
        for _ in range(4):
            assert (await post(gateway, chat("gpt-4o-mini"), {"x-bluesminds-tags": "eval"}))[0] == 200
        assert [f.stats()["requests"] for f in fakes] == [0, 4]
        for _ in range(4):
            assert (await post(gateway, chat("gpt-4o-mini")))[0] == 200
        assert [f.stats()["requests"] for f in fakes] == [2, 6]  # without the tag: both, in turn
    finally:
        await gateway.stop()
        for fake in fakes:
            await fake.stop()


async def test_ab_split_follows_the_weights_with_a_seeded_source(tmp_path, fakes):
    routing = [{"name": "ab", "model": "small", "split": [{"model": "small", "weight": 3},
                                                          {"model": "big", "weight": 1}]}]
    gateway = await start(tmp_path, fakes, routing=routing)
    gateway.app[FORWARDER].router.rng = random.Random(1234)
    rule = gateway.app[CONFIG].current.routing[0]
    expected_rng = random.Random(1234)
    expected = [pick_arm(rule, expected_rng) for _ in range(400)]
    try:
        served = [(await post(gateway, chat("small")))[1]["model"] for _ in range(400)]
        assert served == expected
        share = served.count("small") / len(served)
        assert 0.70 <= share <= 0.80, share
    finally:
        await gateway.stop()


# -- config checks at load and at reload ------------------------------------------------


BAD_RULES = {
    "unknown_plan.yaml": "12: routing[0].when.plan[1]: no plan named 'gold' (defined: free)",
    "unknown_model.yaml": "10: routing[0].rewrite: model 'm9' is not declared in models",
    "unknown_region.yaml": "10: routing[0].regions[0]: no upstream is in region 'us' (regions: eu)",
    "unknown_fallback.yaml": "9: routing[0].fallbacks[1]: model 'm2' is not declared in models",
    "duplicate_name.yaml": "10: routing[1].name: two routing rules are named 'same' (also routing[0])",
}


@pytest.mark.parametrize("name", sorted(BAD_RULES))
def test_bad_rule_is_a_rejected_config(name):
    from click.testing import CliRunner

    from proxy.cli import main

    path = os.path.join(BAD, name)
    result = CliRunner().invoke(main, ["check-config", path])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"{path}:{BAD_RULES[name]}"]


async def test_reload_with_a_bad_rule_keeps_the_old_config(tmp_path, fakes):
    gateway = await start(tmp_path, fakes, routing=[{"name": "ok", "model": "big", "rewrite": "huge"}])
    try:
        gateway.sections["routing"] = [{"name": "bad", "model": "big", "rewrite": "nope"}]
        gateway.save()
        result = await gateway.app[CONFIG].reload(reason="test")
        assert "routing[0].rewrite: model 'nope' is not declared in models" in str(result.error)
        assert (await post(gateway, chat("big")))[1]["model"] == "huge"
    finally:
        await gateway.stop()


def test_older_routing_rules_still_load(tmp_path):
    from proxy.config import load_config

    (tmp_path / "gateway.yaml").write_text(
        "models:\n  m1: {}\nupstreams:\n  - {name: a, url: 'http://127.0.0.1:9', models: '*', region: eu}\n"
        "routing:\n  - model: 'm*'\n    upstreams: [a]\n  - model: '*'\n    regions: [eu]\n")
    snapshot = load_config(str(tmp_path / "gateway.yaml"))
    assert [(r.name, r.model, r.upstreams, r.regions, r.conditional) for r in snapshot.routing] == [
        ("rule-1", "m*", ("a",), (), False), ("rule-2", "*", (), ("eu",), False)]
