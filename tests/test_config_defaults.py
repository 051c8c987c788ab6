"""Safe defaults, and a snapshot no request can change under another."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proxy.config import load_config

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = "models:\n  m1: {pricing: {input: 1, output: 1}}\nupstreams:\n  - name: a\n    url: http://127.0.0.1:9\n" \
          "    models: [m1]\n"


@pytest.fixture
def snapshot(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(MINIMAL)
    return load_config(str(path))


def test_signup_is_invite_only_unless_configured(snapshot) -> None:
    assert snapshot.auth.signup == "invite"


def test_shipped_configs_that_listen_beyond_this_machine_do_not_open_signup() -> None:
    for path in ("config/gateway.yaml", "examples/single-file.yaml", "examples/litellm-fleet/gateway.yaml"):
        data = yaml.safe_load((ROOT / path).read_text())
        assert (data.get("auth") or {}).get("signup", "invite") != "open", path


def test_the_demo_opens_signup_explicitly() -> None:
    data = yaml.safe_load((ROOT / "proxy" / "cli" / "demo.yaml").read_text())
    assert data["auth"]["signup"] == "open"
    assert data["server"]["host"] == "127.0.0.1"


@pytest.mark.parametrize("name", ["models", "plans", "model_lookup", "upstream_by_name"])
def test_snapshot_mappings_are_read_only(snapshot, name: str) -> None:
    mapping = getattr(snapshot, name)
    with pytest.raises(TypeError):
        mapping["intruder"] = None
    assert "intruder" not in mapping


def test_each_setting_default_is_the_dataclass_default(tmp_path) -> None:
    # A section left out entirely and a section written empty build the same settings.
    empty = tmp_path / "empty.yaml"
    empty.write_text(MINIMAL + "server: {}\ndatabase: {}\nauth: {}\nhealth: {}\nretry: {}\n")
    bare = tmp_path / "bare.yaml"
    bare.write_text(MINIMAL)
    a, b = load_config(str(empty)), load_config(str(bare))
    assert (a.server, a.database, a.auth, a.health, a.retry) == (b.server, b.database, b.auth, b.health, b.retry)
    assert (b.server.max_body_bytes, b.database.flush_interval, b.auth.session_ttl, b.health.interval) == \
        (4 * 1024 * 1024, 0.25, 7 * 86400.0, 10.0)
