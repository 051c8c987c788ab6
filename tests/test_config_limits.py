"""Reading config is bounded: file size, nesting, aliases; a hostile file costs little on reload."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from proxy.config import ConfigError, load_config
from proxy.config.holder import ConfigHolder
from proxy.config.source import MAX_ALIASES, MAX_FILE_BYTES

BAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_configs")
GOOD = "models:\n  m1: {pricing: {input: 1, output: 1}}\nupstreams:\n  - name: a\n    url: http://127.0.0.1:9\n" \
       "    models: [m1]\n"


def problems(path: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path) -> None:
    big = tmp_path / "gateway.yaml"
    big.write_text(GOOD + "#" * MAX_FILE_BYTES + "\n")
    assert problems(str(big)) == [f"{big}: file is larger than 4 MiB; a config file is never that big"]


def test_too_many_aliases_are_refused(tmp_path) -> None:
    many = tmp_path / "gateway.yaml"
    many.write_text(GOOD + "extra: &x 1\nlist: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n")
    assert problems(str(many)) == [f"{many}:8: more than {MAX_ALIASES} aliases"]


def test_a_few_aliases_are_fine(tmp_path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("models:\n  m1: {pricing: &p {input: 1, output: 1}}\n  m2: {pricing: *p}\n"
                      "upstreams:\n  - name: a\n    url: http://127.0.0.1:9\n    models: '*'\n")
    snapshot = load_config(str(config))
    assert snapshot.models["m2"].pricing == snapshot.models["m1"].pricing


def test_a_directory_named_like_a_config_file_is_a_problem(tmp_path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gateway.yaml").write_text(GOOD)
    (tmp_path / "config" / "more.yaml").mkdir()
    assert problems(str(tmp_path / "config")) == [f"{tmp_path / 'config' / 'more.yaml'}: is a directory, not a YAML file"]


async def test_an_alias_bomb_on_reload_is_rejected_within_a_small_memory_bound(tmp_path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(GOOD)
    holder = ConfigHolder(str(config), load_config(str(config)))
    with open(os.path.join(BAD, "alias_bomb.yaml"), encoding="utf-8") as fh:
        (config / "bomb.yaml").write_text(fh.read())
    tracemalloc.start()
    try:
        result = await holder.reload()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error == (f"{config / 'bomb.yaml'}: expands to more than 250000 values once aliases are "
                            "followed (an alias bomb?)")
    assert holder.version == 1
    assert peak < 200 * 1024 * 1024  # it took 2.4 GB before the bound
