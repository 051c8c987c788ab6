"""`bluesminds routes explain`: the rule by name, the chain, each step's upstreams; exit 0/1/2."""

from __future__ import annotations

import os

import orjson
import pytest
from click.testing import CliRunner

from proxy.cli import main

CONFIG = """\
server: {region: eu}
models:
  small: {fallbacks: [big], context_window: 100}
  big: {aliases: [large]}
  huge: {}
plans:
  free: {}
  gold: {}
upstreams:
  - {name: a, url: "http://127.0.0.1:9", models: [small, big], region: eu}
  - {name: b, url: "http://127.0.0.1:9", models: [big], priority: 2}
  - {name: c, url: "http://127.0.0.1:9", models: "*", region: us}
routing:
  - name: gold-to-huge
    when: {plan: gold, key_tags: [batch]}
    rewrite: huge
    fallbacks: [big]
  - name: ab
    model: small
    when: {headers: {x-experiment: "on"}}
    split: [{model: small, weight: 3}, {model: big, weight: 1}]
  - name: eval-in-us
    model: large
    when: {tags: [eval]}
    regions: [us]
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "gateway.yaml").write_text(CONFIG)

    def request(body) -> str:
        path = tmp_path / "request.json"
        path.write_bytes(orjson.dumps(body) if not isinstance(body, bytes) else body)
        return str(path)

    return str(tmp_path / "gateway.yaml"), request


def explain(config: str, request: str, *args: str):
    return CliRunner().invoke(main, ["routes", "explain", request, "--config", config, *args])


def chat(model: str, content: str = "hi", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def test_no_rule_prints_the_default_chain_and_exits_1(files):
    config, request = files
    result = explain(config, request(chat("small")))
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "rule: none (no rule matches; default routing)",
        "model: small",
        "chain:",
        "  1. small: a; other regions: c (us)",
        "  2. big: a > b; other regions: c (us)",
    ]


def test_plan_and_key_tags_rule(files):
    config, request = files
    result = explain(config, request(chat("small")), "--plan", "gold", "--key-tags", "batch,x")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "rule: gold-to-huge",
        "model: small",
        "chain:",
        "  1. huge: no local upstream; other regions: c (us)",
        "  2. big: a > b; other regions: c (us)",
    ]
    assert explain(config, request(chat("small")), "--plan", "gold").exit_code == 1  # no batch tag


def test_split_rule_prints_each_arm(files):
    config, request = files
    result = explain(config, request(chat("small")), "--header", "X-Experiment: on")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "rule: ab",
        "model: small",
        "split: small 3/4, big 1/4",
        "chain (small):",
        "  1. small: a; other regions: c (us)",
        "  2. big: a > b; other regions: c (us)",
        "chain (big):",
        "  1. big: a > b; other regions: c (us)",
    ]


def test_region_pin_from_metadata_tag_and_alias(files):
    config, request = files
    result = explain(config, request(chat("large", metadata={"purpose": "eval"})))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "rule: eval-in-us",
        "model: large (big)",
        "chain:",
        "  1. big: b; other regions: c (us)",
    ]


def test_context_window_skip_is_shown(files):
    config, request = files
    result = explain(config, request(chat("small", "word " * 400)))
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[3:] == [
        "  1. small: skipped (about 506 prompt tokens, context window 100)",
        "  2. big: a > b; other regions: c (us)",
    ]


def test_bad_config_exits_2(files, tmp_path):
    _, request = files
    (tmp_path / "bad.yaml").write_text(CONFIG.replace("rewrite: huge", "rewrite: nope"))
    result = explain(str(tmp_path / "bad.yaml"), request(chat("small")))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'bad.yaml'}:16: routing[0].rewrite: model 'nope' is not declared in models"]


@pytest.mark.parametrize("body, args, message", [
    (b"{not json", (), "not JSON"),
    ([1, 2], (), "expected a JSON object with a string `model`"),
    (chat("nope"), (), "model 'nope' is not declared in models"),
    (chat("small"), ("--plan", "platinum"), "--plan 'platinum': no such plan (defined: free, gold)"),
    (chat("small"), ("--header", "no-colon"), "--header 'no-colon': expected 'name: value'"),
])
def test_bad_request_exits_2(files, body, args, message):
    config, request = files
    result = explain(config, request(body), *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_missing_request_file_exits_2(files, tmp_path):
    config, _ = files
    result = explain(config, str(tmp_path / "absent.json"))
    assert result.exit_code == 2
    assert result.stderr == f"error: {os.path.join(tmp_path, 'absent.json')}: No such file or directory\n"
