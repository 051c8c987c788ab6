"""The shipped configs are valid as shipped (with their secrets set)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from proxy.cli import main

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"LITELLM_KEY": "k", "BLUESMINDS_ADMIN_KEY": "a", "LITELLM_EU_KEY": "e",
           "LITELLM_US_KEY": "u", "LITELLM_BACKUP_KEY": "b"}


def test_default_config_is_valid():
    result = CliRunner().invoke(main, ["check-config", str(ROOT / "config")])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_example_configs_are_valid(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    for path in ("examples/single-file.yaml", "examples/litellm-fleet"):
        result = CliRunner().invoke(main, ["check-config", str(ROOT / path)])
        assert result.exit_code == 0, (path, result.output)


def test_example_fleet_without_its_secrets_names_each_missing_variable(monkeypatch):
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["check-config", str(ROOT / "examples/litellm-fleet")])
    assert result.exit_code == 1
    for name in ("BLUESMINDS_ADMIN_KEY", "LITELLM_EU_KEY", "LITELLM_US_KEY", "LITELLM_BACKUP_KEY"):
        assert f"environment variable {name} is not set" in result.output
