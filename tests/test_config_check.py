"""`bluesminds check-config`: one bad config per error kind, each with its exact message.

Every fixture lives in tests/bad_configs/; a message names the file, the line,
the JSON path and what is wrong, as the CLI prints it.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from proxy.config import ConfigError, load_config

BAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_configs")
UNSET_SECRET = "BLUESMINDS_TEST_UNSET_KEY"

CASES = {
    "invalid_yaml.yaml": "7: invalid YAML: expected ',' or ']', but got ':' "
                         "(while parsing a flow sequence that starts on line 6)",
    "top_level_list.yaml": "1: top level must be a mapping of sections",
    "unknown_section.yaml": "7: unknown section 'caching' (known: server, database, admin, auth, "
                            "health, retry, upstreams, models, plans, routing, upstream_overrides, webhooks, billing, "
                            "limits, capture, cache)",
    "cache_ttl_over_max.yaml": "9: plans.p.cache.ttl_seconds: 7200s is longer than cache.max_ttl_seconds (3600s); "
                               "shorten it or raise the bound",
    "cache_backend_limits_memory.yaml": "8: cache.backend: 'limits' reuses the Redis of limits.backend, which is "
                                        "memory; name a redis:// URL here or set limits.backend",
    "cache_price_bad.yaml": "9: plans.p.cache.price_per_hit: 'free' does not have the expected format (flat USD "
                            'billed per cache hit instead of tokens (default 0), such as "0.0001"; at most nine '
                            "decimals)",
    "limits_backend.yaml": "2: limits.backend: 'redis:/127.0.0.1' does not have the expected format "
                           "(memory, or redis://host:port/db)",
    "limits_hold_ttl.yaml": "3: limits.hold_ttl: must be at least 300ms",
    "unknown_field.yaml": "7: upstreams[0].wieght: unknown field 'wieght' (known: name, url, weight, "
                          "priority, models, region, timeouts, max_concurrent, api_key_env, enabled, drain)",
    "wrong_type.yaml": "2: server.port: '8080' is not of type 'integer'",
    "weight_zero.yaml": "7: upstreams[0].weight: 0 is too small: it must be greater than 0",
    "negative_priority.yaml": "7: upstreams[0].priority: -1 is too small: it must be at least 0",
    "bad_duration.yaml": "2: health.interval: '10 seconds' does not have the expected format "
                         "(seconds, or a duration such as 250ms, 10s, 5m, 1h30m, 7d)",
    "bad_size.yaml": "2: server.max_body: '4 megabytes' does not have the expected format "
                     "(bytes, or a size such as 512KB, 4MiB or 1GB)",
    "bad_url.yaml": "5: upstreams[0].url: '127.0.0.1:9' does not have the expected format "
                    "(an http:// or https:// URL such as http://10.0.0.5:4000)",
    "duplicate_upstream.yaml": "7: upstreams[1].name: duplicate upstream name 'a' (also upstreams[0])",
    "duplicate_key.yaml": "8: upstreams[0].weight: duplicate key 'weight'",
    "model_not_served.yaml": "3: models.m2: model 'm2' is served by no upstream; "
                             "list it under an upstream's models or use models: '*'",
    "upstream_model_undeclared.yaml": "6: upstreams[0].models[1]: model 'm9' is not declared in models",
    "alias_clash.yaml": "4: models.m2: name or alias 'fast' is used by two models ('m1' and 'm2')",
    "missing_secret.yaml": f"7: upstreams[0].api_key_env: environment variable {UNSET_SECRET} is not set "
                           "(it holds a secret the config names)",
    "secret_in_env_field.yaml": "7: upstreams[0].api_key_env: must be the name of an environment variable "
                                "(letters, digits and _) that holds the secret, not the secret itself",
    "default_plan_missing.yaml": "2: auth.default_plan: plan 'starter' is not defined in plans (defined: free, pro)",
    "routing_unknown_upstream.yaml": "9: routing[0].upstreams[1]: no upstream named 'b'",
    "fallback_unknown_model.yaml": "3: models.m1.fallbacks[0]: fallback model 'm9' is not declared in models",
    "url_port_out_of_range.yaml": "5: upstreams[0].url: 'http://127.0.0.1:99999' is not a usable URL: "
                                  "Port out of range 0-65535",
    "url_unclosed_ipv6.yaml": "5: upstreams[0].url: 'http://[::1' is not a usable URL: Invalid IPv6 URL",
    "bcrypt_rounds_too_high.yaml": "2: auth.bcrypt_rounds: 31 is too large: it must be at most 16",
    "database_path_is_directory.yaml": f"2: database.path: {BAD} is a directory; name the database file "
                                       f"in it, such as {os.path.join(BAD, 'bluesminds.db')}",
    "alias_bomb.yaml": " expands to more than 250000 values once aliases are followed (an alias bomb?)",
    "nested_too_deep.yaml": "2: nested deeper than 64 levels",
}


def expected_lines(name: str) -> list[str]:
    return [f"{os.path.join(BAD, name)}:{CASES[name]}"]


SECTION_TWICE = os.path.join(BAD, "section_in_two_files")
SECTION_TWICE_LINE = (f"{SECTION_TWICE}/b.yaml:1: health: section 'health' is already defined in "
                      f"{SECTION_TWICE}/a.yaml")


@pytest.fixture(autouse=True)
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET_SECRET, raising=False)


def test_every_fixture_has_a_case() -> None:
    files = {n for n in os.listdir(BAD) if n.endswith(".yaml")}
    assert files == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_config_reports_exact_problem(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(os.path.join(BAD, name))
    assert [str(p) for p in caught.value.problems] == expected_lines(name)


def test_section_defined_in_two_files() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(SECTION_TWICE)
    assert [str(p) for p in caught.value.problems] == [SECTION_TWICE_LINE]


def check_config(path: str):
    from proxy.cli import main

    return CliRunner(env={UNSET_SECRET: None}).invoke(main, ["check-config", path])


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_config_prints_exact_problem(name: str) -> None:
    result = check_config(os.path.join(BAD, name))
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == expected_lines(name)
    assert "sk-live" not in result.output


def test_check_config_section_in_two_files() -> None:
    result = check_config(SECTION_TWICE)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [SECTION_TWICE_LINE]


def test_check_config_accepts_a_good_config(tmp_path) -> None:
    good = tmp_path / "gateway.yaml"
    good.write_text("models:\n  m1: {}\nupstreams:\n  - name: a\n    url: http://127.0.0.1:9\n    models: [m1]\n")
    result = check_config(str(good))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{good}: OK (1 upstreams, 1 models, 1 plans, digest ")


def test_every_problem_is_reported_at_once(tmp_path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text("models:\n  m1: {}\nupstreams:\n  - name: a\n    url: ftp://x\n    models: [m1]\n"
                   "    weight: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(bad))
    assert [p.path for p in caught.value.problems] == [("upstreams", 0, "url"), ("upstreams", 0, "weight")]


def test_shipped_config_is_valid() -> None:
    shipped = os.path.join(os.path.dirname(BAD), "..", "config")
    snapshot = load_config(os.path.normpath(shipped))
    assert snapshot.upstreams
