"""The architecture and operations guides stay true to the code: module paths, config keys, defaults, metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.config.build import build_snapshot
from proxy.config.source import read_source

from .gateway_harness import GatewayHarness, upstream_entry
from .redis_server import RedisServer, needs_redis

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCHEMAS = ROOT / "proxy" / "schemas"


def test_every_module_path_the_architecture_names_exists():
    text = (DOCS / "architecture.md").read_text()
    paths = set(re.findall(r"\bproxy/[\w/]+(?:\.py)?/?", text))
    assert len(paths) > 40, paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == []


def _schema_keys(path: Path) -> set[str]:
    schema = json.loads(path.read_text())
    if schema.get("type") == "array":
        return set(schema["items"]["properties"])
    if "properties" in schema:
        return set(schema["properties"])
    props: set[str] = set()
    for alt in schema["additionalProperties"].get("oneOf", [schema["additionalProperties"]]):
        props |= set(alt.get("properties", {}))
    return props


def _documented() -> dict[str, dict[str, str]]:
    """section → key → default, from the `### `section`` tables of operations.md."""
    text = (DOCS / "operations.md").read_text()
    config = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, dict[str, str]] = {}
    for part in re.split(r"^### ", config, flags=re.M)[1:]:
        name = re.match(r"`(\w+)`", part).group(1)
        rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", part, re.M)
        sections[name] = {key: default.strip() for key, default in rows}
    return sections


def test_every_schema_key_is_documented_and_every_documented_key_exists():
    documented = _documented()
    schemas = {p.name.removesuffix(".schema.json"): _schema_keys(p) for p in SCHEMAS.glob("*.schema.json")}
    assert sorted(documented) == sorted(schemas)
    for section, keys in schemas.items():
        assert set(documented[section]) == keys, section


def test_the_documented_defaults_are_the_loaders(tmp_path):
    (tmp_path / "c.yaml").write_text("upstreams:\n  - {name: u, url: 'http://127.0.0.1:9', models: [m]}\n"
                                     "models:\n  m: {}\nrouting:\n  - {model: m}\n")
    snapshot, _ = build_snapshot(read_source(str(tmp_path)), str(tmp_path), environ={})
    documented = _documented()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "KiB": 1 << 10, "MiB": 1 << 20}

    def value(text: str):
        text = text.strip("`").strip("\"")
        if text in ("true", "false"):
            return text == "true"
        if text == "none":
            return None
        number = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|KiB|MiB)?", text)
        if number:
            n = float(number.group(1)) * units.get(number.group(2) or "", 1)
            return int(n) if n == int(n) else n
        return text

    renamed = {("server", "max_body"): "max_body_bytes", ("server", "max_upstream_body"): "max_upstream_body_bytes"}
    objects = {"server": snapshot.server, "database": snapshot.database, "auth": snapshot.auth,
               "health": snapshot.health, "retry": snapshot.retry, "limits": snapshot.limits,
               "webhooks": snapshot.webhooks, "upstreams": snapshot.upstreams[0], "models": snapshot.models["m"],
               "plans": snapshot.plans["free"], "billing": snapshot.billing, "admin": snapshot.admin,
               "capture": snapshot.capture, "cache": snapshot.cache}
    checked = 0
    for section, obj in objects.items():
        for key, default in documented[section].items():
            composite = ": " in default or "," in default
            if composite or not re.fullmatch(r"`[^`]+`|none", default) or default == "none" and section == "server":
                continue  # a composite or prose default, or a server list left empty
            attr = renamed.get((section, key), key)
            if not hasattr(obj, attr):
                continue
            actual = getattr(obj, attr)
            expected = value(default)
            if key == "path" and section == "database":
                assert actual == str(tmp_path / expected)
            elif isinstance(actual, (tuple, frozenset)):
                assert tuple(actual) == (() if expected is None else (expected,)), (section, key)
            elif isinstance(actual, float) and isinstance(expected, (int, float)):
                assert abs(actual - expected) < 1e-9, (section, key, actual)
            else:
                assert actual == expected, (section, key, actual)
            checked += 1
    assert checked >= 50, checked


@needs_redis
async def test_every_metric_the_operations_guide_names_is_in_metrics(tmp_path, fake):
    named = set(re.findall(r"`(bluesminds_\w+)`", (DOCS / "operations.md").read_text()))
    assert len(named) >= 15, named
    redis = RedisServer()
    redis.start()
    # Redis as the limits backend: the shared limiter's series exist only then.
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", fake.url)],
                                   server={"metrics": {"access": "open"}}, limits={"backend": redis.url},
                                   plans={"test": {"rpm": 1}})
    try:
        await harness.start()
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/chat/completions", headers=harness.headers(),
                                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status == 200
            # A second one within the minute is refused: the rejections counter gets its first sample.
            async with session.post(harness.url + "/v1/chat/completions", headers=harness.headers(),
                                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status == 429
            async with session.get(harness.url + "/metrics") as r:
                assert r.status == 200
                text = await r.text()
        exported = set()
        for family in text_string_to_metric_families(text):
            exported.add(family.name)
            if family.type == "counter":  # declared, if not yet counted: its samples will be NAME_total
                exported.add(family.name + "_total")
            exported |= {sample.name for sample in family.samples}
        assert sorted(named - exported) == []
    finally:
        await harness.stop()
        redis.stop()


def test_the_readme_links_every_guide_and_keeps_its_two_opening_commands():
    readme = (ROOT / "README.md").read_text()
    for guide in ("quickstart", "architecture", "operations", "migrating-from-litellm"):
        assert f"(docs/{guide}.md)" in readme
        assert (DOCS / f"{guide}.md").is_file()
    commands = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    assert commands[:2] == ["pip install -e . && bluesminds demo", "pip install -e '.[test]' && python -m pytest -q"]
