"""The managed config file: what server changes write, and what they refuse."""

from __future__ import annotations

import os

import pytest
import yaml

from proxy.config import ConfigError, load_config
from proxy.config.managed import (
    HEADER, ManagedDoc, ManagedFileInvalid, add_server, read_managed, remove_server, update_server,
    write_atomic,
)
from proxy.config.source import managed_file_for
from proxy.errors import Conflict, InvalidRequest, NotFound

HAND = """models:
  m1: {}
  m2: {}
upstreams:
  - name: hand
    url: http://127.0.0.1:9
    models: "*"
"""


@pytest.fixture
def config_dir(tmp_path) -> str:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(HAND)
    return str(folder)


def apply(config_dir: str, edit) -> None:
    """One admin change the way the route makes it: read, edit, write."""
    path = managed_file_for(config_dir)
    doc, _ = read_managed(path)
    edit(doc, load_config(config_dir))
    write_atomic(path, doc.to_yaml())


def test_added_server_is_config_in_the_managed_file(config_dir: str) -> None:
    apply(config_dir, lambda doc, snap: add_server(
        doc, snap, {"models": ["m1"], "weight": 3, "url": "http://127.0.0.1:10", "name": "extra"}))
    path = os.path.join(config_dir, "servers.managed.yaml")
    text = open(path, encoding="utf-8").read()
    assert text.startswith(HEADER)
    # Fields come out in the schema's order, like hand-written config.
    assert yaml.safe_load(text) == {"upstreams": [
        {"name": "extra", "url": "http://127.0.0.1:10", "weight": 3, "models": ["m1"]}]}
    assert list(yaml.safe_load(text)["upstreams"][0]) == ["name", "url", "weight", "models"]
    snapshot = load_config(config_dir)
    assert [u.name for u in snapshot.upstreams] == ["hand", "extra"]
    assert snapshot.upstream_by_name["extra"].source == path
    assert open(os.path.join(config_dir, "gateway.yaml")).read() == HAND


def test_single_file_config_gets_a_managed_file_beside_it(tmp_path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(HAND)
    apply(str(config), lambda doc, snap: add_server(
        doc, snap, {"name": "extra", "url": "http://127.0.0.1:10", "models": "*"}))
    assert (tmp_path / "gateway.managed.yaml").exists()
    assert [u.name for u in load_config(str(config)).upstreams] == ["hand", "extra"]


def test_duplicate_name_conflicts_and_names_the_file(config_dir: str) -> None:
    snapshot = load_config(config_dir)
    with pytest.raises(Conflict) as caught:
        add_server(ManagedDoc(), snapshot, {"name": "hand", "url": "http://127.0.0.1:10", "models": "*"})
    assert caught.value.message == (
        f"A server named 'hand' already exists (declared in {config_dir}/gateway.yaml); "
        "choose another name or PATCH the existing one.")
    assert caught.value.param == "name"


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"name": "x", "url": "http://h", "models": "*", "weight": 0}, "weight",
     "weight: 0 is too small: it must be greater than 0"),
    ({"name": "x", "url": "h:1", "models": "*"}, "url",
     "url: 'h:1' does not have the expected format (an http:// or https:// URL such as http://10.0.0.5:4000)"),
    ({"name": "x", "models": "*"}, None, "'url' is a required property"),
    ({"name": "x", "url": "http://h", "models": "*", "api_key": "sk-secret"}, "api_key",
     "api_key: unknown field 'api_key' (known: name, url, weight, priority, models, region, timeouts, "
     "max_concurrent, api_key_env, enabled, drain)"),
    ({"name": "x", "url": "http://h", "models": "*", "timeouts": {"connect": "soon"}}, "timeouts.connect",
     "timeouts.connect: 'soon' does not have the expected format "
     "(seconds, or a duration such as 250ms, 10s, 5m, 1h30m, 7d)"),
    (["not", "an", "object"], None, "The request body must be a JSON object describing the server."),
])
def test_bad_bodies_name_the_field(config_dir: str, body, param, message) -> None:
    with pytest.raises(InvalidRequest) as caught:
        add_server(ManagedDoc(), load_config(config_dir), body)
    assert (caught.value.param, caught.value.message) == (param, message)
    assert "sk-secret" not in caught.value.message


def test_patch_merges_into_a_managed_server_and_null_removes_a_field(config_dir: str) -> None:
    apply(config_dir, lambda doc, snap: add_server(
        doc, snap, {"name": "extra", "url": "http://127.0.0.1:10", "models": "*", "region": "eu"}))
    apply(config_dir, lambda doc, snap: update_server(doc, snap, "extra", {"weight": 5, "region": None}))
    upstream = load_config(config_dir).upstream_by_name["extra"]
    assert (upstream.weight, upstream.region) == (5, None)


def test_hand_written_server_can_only_be_drained_or_disabled(config_dir: str) -> None:
    apply(config_dir, lambda doc, snap: update_server(doc, snap, "hand", {"drain": True}))
    doc, _ = read_managed(managed_file_for(config_dir))
    assert doc.overrides == {"hand": {"drain": True}}
    assert load_config(config_dir).upstream_by_name["hand"].drain is True

    with pytest.raises(Conflict) as caught:
        update_server(doc, load_config(config_dir), "hand", {"weight": 2, "drain": False})
    assert caught.value.message == (
        f"Server 'hand' is declared in {config_dir}/gateway.yaml, which the gateway never rewrites; "
        "change weight there. Through this API it can only be drained or disabled (fields: drain, enabled).")

    # null hands the switch back to the file.
    apply(config_dir, lambda doc, snap: update_server(doc, snap, "hand", {"drain": None}))
    assert read_managed(managed_file_for(config_dir))[0].overrides == {}
    assert load_config(config_dir).upstream_by_name["hand"].drain is False


def test_hand_written_server_cannot_be_deleted(config_dir: str) -> None:
    with pytest.raises(Conflict) as caught:
        remove_server(ManagedDoc(), load_config(config_dir), "hand")
    assert caught.value.message == (
        f"Server 'hand' is declared in {config_dir}/gateway.yaml, which the gateway never rewrites; "
        "remove it from that file, or drain or disable it here with PATCH.")


def test_unknown_server_is_not_found(config_dir: str) -> None:
    snapshot = load_config(config_dir)
    with pytest.raises(NotFound):
        update_server(ManagedDoc(), snapshot, "ghost", {"drain": True})
    with pytest.raises(NotFound):
        remove_server(ManagedDoc(), snapshot, "ghost")


def test_rename_is_refused(config_dir: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        update_server(ManagedDoc(), load_config(config_dir), "hand", {"name": "other"})
    assert caught.value.param == "name"


def test_delete_managed_server_drops_its_override(config_dir: str) -> None:
    apply(config_dir, lambda doc, snap: add_server(
        doc, snap, {"name": "extra", "url": "http://127.0.0.1:10", "models": "*"}))
    path = managed_file_for(config_dir)
    doc, _ = read_managed(path)
    doc.overrides["extra"] = {"enabled": False}
    remove_server(doc, load_config(config_dir), "extra")
    assert (doc.upstreams, doc.overrides) == ([], {})


def test_sections_added_by_hand_are_kept(config_dir: str) -> None:
    path = managed_file_for(config_dir)
    with open(path, "w") as fh:
        fh.write("routing:\n  - model: m1\n    upstreams: [hand]\n")
    apply(config_dir, lambda doc, snap: add_server(
        doc, snap, {"name": "extra", "url": "http://127.0.0.1:10", "models": "*"}))
    assert yaml.safe_load(open(path))["routing"] == [{"model": "m1", "upstreams": ["hand"]}]


def test_unparseable_managed_file_is_a_conflict(config_dir: str) -> None:
    path = managed_file_for(config_dir)
    with open(path, "w") as fh:
        fh.write("upstreams: [\n")
    with pytest.raises(ManagedFileInvalid) as caught:
        read_managed(path)
    assert caught.value.status == 409
    assert path in caught.value.message


def test_write_atomic_replaces_and_none_removes(tmp_path) -> None:
    path = str(tmp_path / "servers.managed.yaml")
    write_atomic(path, b"a: 1\n")
    write_atomic(path, b"a: 2\n")
    assert open(path, "rb").read() == b"a: 2\n"
    assert os.listdir(tmp_path) == ["servers.managed.yaml"]  # no temporary file left behind
    write_atomic(path, None)
    write_atomic(path, None)
    assert os.listdir(tmp_path) == []


def test_overrides_merge_with_a_hand_written_section(config_dir: str) -> None:
    with open(os.path.join(config_dir, "gateway.yaml"), "a") as fh:
        fh.write("  - name: other\n    url: http://127.0.0.1:11\n    models: '*'\n"
                 "upstream_overrides:\n  other: {enabled: false}\n")
    apply(config_dir, lambda doc, snap: update_server(doc, snap, "hand", {"drain": True}))
    snapshot = load_config(config_dir)
    assert (snapshot.upstream_by_name["hand"].drain, snapshot.upstream_by_name["other"].enabled) == (True, False)

    apply(config_dir, lambda doc, snap: update_server(doc, snap, "other", {"enabled": True}))
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    assert [str(p) for p in caught.value.problems] == [
        f"{config_dir}/servers.managed.yaml:6: upstream_overrides.other: upstream_overrides 'other' is defined "
        f"twice (first in {config_dir}/gateway.yaml)"]


@pytest.mark.parametrize("content", [
    "upstreams: [" * 50_000 + "]" * 50_000 + "\n",  # the parser would recurse until Python gives up
    "upstreams: {a: [oops\n",
])
def test_an_unreadable_managed_file_is_a_conflict_not_a_crash(tmp_path, content: str) -> None:
    path = tmp_path / "servers.managed.yaml"
    path.write_text(content)
    with pytest.raises(ManagedFileInvalid) as caught:
        read_managed(str(path))
    assert caught.value.message == (f"The managed config file {path} cannot be parsed; fix or remove it, "
                                    "then retry.")
