"""Reload is build → compare → swap: all-or-nothing, identical content a no-op."""

from __future__ import annotations

import gc
import logging
import os

import pytest
import yaml

from proxy.config import load_config
from proxy.config.holder import ConfigHolder
from proxy.config.source import ConfigProblem

GATEWAY = "models:\n  m1: {}\n"
UPSTREAMS = """upstreams:
  - name: a
    url: http://127.0.0.1:9
    models: "*"
"""
TWO_UPSTREAMS = UPSTREAMS + """  - name: b
    url: http://127.0.0.1:10
    models: "*"
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def config_dir(tmp_path) -> str:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(GATEWAY)
    (folder / "upstreams.yaml").write_text(UPSTREAMS)
    return str(folder)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def holder(config_dir: str, clock: Clock) -> ConfigHolder:
    return ConfigHolder(config_dir, load_config(config_dir), clock=clock)


def write(config_dir: str, name: str, text: str) -> None:
    with open(os.path.join(config_dir, name), "w", encoding="utf-8") as fh:
        fh.write(text)


async def test_valid_edit_swaps_a_new_snapshot(holder: ConfigHolder, config_dir: str, clock: Clock) -> None:
    before = holder.current
    seen = []
    holder.subscribe(lambda old, new: seen.append((old, new)))
    write(config_dir, "upstreams.yaml", TWO_UPSTREAMS)
    clock.now = 1005.0
    result = await holder.reload(reason="test")
    assert (result.changed, result.version, result.error) == (True, 2, None)
    assert [u.name for u in holder.current.upstreams] == ["a", "b"]
    assert seen == [(before, holder.current)]
    status = holder.status()
    assert (status["version"], status["loaded_at"], status["digest"], status["last_error"]) == \
        (2, 1005.0, holder.current.digest, None)
    # The old snapshot is untouched: a request holding it finishes on it.
    assert [u.name for u in before.upstreams] == ["a"]


async def test_identical_content_is_a_no_op(holder: ConfigHolder, config_dir: str, clock: Clock) -> None:
    seen = []
    holder.subscribe(lambda old, new: seen.append(new))
    write(config_dir, "upstreams.yaml", UPSTREAMS)  # rewritten, same bytes
    clock.now = 2000.0
    result = await holder.reload()
    assert (result.changed, result.version) == (False, 1)
    assert holder.loaded_at == 1000.0
    assert seen == []


BAD_EDITS = {
    "invalid YAML": ("upstreams.yaml", UPSTREAMS + "  - name: [b\n",
                     "upstreams.yaml:5: invalid YAML: expected ',' or ']', but got '<stream end>' "
                     "(while parsing a flow sequence that starts on line 5)"),
    "schema-invalid": ("upstreams.yaml", UPSTREAMS + "    weight: -1\n",
                       "upstreams.yaml:5: upstreams[0].weight: -1 is too small: it must be greater than 0"),
    "truncated": ("upstreams.yaml", UPSTREAMS[:30],
                  "upstreams.yaml:3: invalid YAML: could not find expected ':' "
                  "(while scanning a simple key that starts on line 3)"),
    "cross-field": ("upstreams.yaml", UPSTREAMS.replace('"*"', "[m1, m9]"),
                    "upstreams.yaml:4: upstreams[0].models[1]: model 'm9' is not declared in models"),
}


@pytest.mark.parametrize("kind", sorted(BAD_EDITS))
async def test_bad_edit_keeps_old_config_and_reports(
        kind: str, holder: ConfigHolder, config_dir: str, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    good = holder.current
    name, text, message = BAD_EDITS[kind]
    write(config_dir, name, text)
    clock.now = 1010.0
    with caplog.at_level(logging.ERROR, logger="bluesminds.config"):
        result = await holder.reload(reason="test")
    expected = os.path.join(config_dir, message)
    assert (result.changed, result.version, result.error) == (False, 1, expected)
    assert holder.current is good
    status = holder.status()
    assert (status["last_error"], status["last_error_at"], status["failed_reloads"]) == (expected, 1010.0, 1)
    assert [r.getMessage() for r in caplog.records] == [
        f"config reload rejected (test), keeping version 1: {expected}"]

    # A good edit clears the error and applies.
    write(config_dir, name, TWO_UPSTREAMS)
    result = await holder.reload(reason="test")
    assert (result.changed, result.version, result.error) == (True, 2, None)
    assert holder.status()["last_error"] is None


async def test_reverting_a_bad_edit_clears_the_error_without_a_new_version(
        holder: ConfigHolder, config_dir: str) -> None:
    write(config_dir, "upstreams.yaml", "upstreams: [")
    assert (await holder.reload()).error
    write(config_dir, "upstreams.yaml", UPSTREAMS)
    result = await holder.reload()
    assert (result.changed, result.version, result.error) == (False, 1, None)
    assert holder.status()["last_error"] is None


async def test_deleted_file_is_a_change(holder: ConfigHolder, config_dir: str) -> None:
    write(config_dir, "extra.yaml", "upstreams:\n  - name: z\n    url: http://127.0.0.1:11\n    models: '*'\n")
    assert (await holder.reload()).version == 2
    os.remove(os.path.join(config_dir, "extra.yaml"))
    assert (await holder.reload()).version == 3
    assert [u.name for u in holder.current.upstreams] == ["a"]


async def test_a_builder_bug_rejects_the_reload(holder: ConfigHolder, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr("proxy.config.holder.build_snapshot", broken)
    result = await holder.reload()
    assert result.error == ("<config>: internal error while building the config (KeyError); "
                            "the previous config keeps serving")
    assert holder.version == 1


async def test_an_applied_reload_logs_and_keeps_its_diff(holder: ConfigHolder, config_dir: str, clock: Clock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    write(config_dir, "gateway.yaml", GATEWAY + "  m2: {}\nplans:\n  free: {rpm: 5}\n  pro: {}\n")
    write(config_dir, "upstreams.yaml", TWO_UPSTREAMS.replace("models: \"*\"", "models: \"*\"\n    weight: 3", 1))
    clock.now = 1005.0
    with caplog.at_level(logging.INFO, logger="bluesminds.config"):
        assert (await holder.reload()).changed
    assert holder.status()["last_diff"] == {
        "version": 2, "at": 1005.0,
        "upstreams": {"added": ["b"], "removed": [], "changed": ["a"]},
        "models": {"added": ["m2"], "removed": [], "changed": []},
        "plans": {"added": ["pro"], "removed": [], "changed": ["free"]},
    }
    assert ("upstreams added: b; upstreams changed: a; models added: m2; plans added: pro; plans changed: free"
            in caplog.text)


async def test_a_check_reporting_a_problem_rejects_the_reload(holder: ConfigHolder, config_dir: str) -> None:
    seen = []

    async def refuse(current, candidate):
        seen.append((current.digest, candidate.digest))
        return [ConfigProblem("not now", file="x.yaml", path=("plans", "pro"))]

    holder.add_check(refuse)
    write(config_dir, "upstreams.yaml", TWO_UPSTREAMS)
    result = await holder.reload()
    assert (result.changed, result.version, result.error) == (False, 1, "x.yaml: plans.pro: not now")
    assert holder.status()["last_diff"] is None
    holder.remove_check(refuse)
    assert (await holder.reload()).version == 2
    assert len(seen) == 1  # an unchanged config runs no check


async def test_a_check_that_fails_rejects_the_reload(holder: ConfigHolder, config_dir: str) -> None:
    async def broken(current, candidate):
        raise OSError("database gone")

    holder.add_check(broken)
    write(config_dir, "upstreams.yaml", TWO_UPSTREAMS)
    result = await holder.reload()
    assert (result.changed, result.error) == (
        False, "<config>: the reload could not be checked (OSError); the previous config keeps serving")


async def test_no_yaml_node_outlives_its_reload(holder: ConfigHolder, config_dir: str) -> None:
    # A loader shared across reloads kept every composed node of every reload alive.
    for i in range(20):
        write(config_dir, "gateway.yaml", GATEWAY + f"  m{i + 2}: {{aliases: [alias{i}]}}\n")
        assert (await holder.reload()).changed
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, yaml.Node)] == []
