"""`bluesminds import litellm-config` on a realistic LiteLLM proxy config: exact output, exact report, exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
import yaml
from click.testing import CliRunner

from proxy.cli import main

from . import litellm_process

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "litellm"
CONFIG = FIXTURES / "config.yaml"


def run(*args: str, env: dict[str, str | None] | None = None):
    # The master key's variable is unset unless a test sets it, so the report's note is stable.
    result = CliRunner().invoke(main, ["import", "litellm-config", *args],
                                env={"LITELLM_MASTER_KEY": None, **(env or {})})
    return result


def test_the_fixture_becomes_exactly_the_expected_upstreams_and_models():
    result = run(str(CONFIG))
    assert result.exit_code == 0, result.output
    assert result.stdout == (FIXTURES / "expected.yaml").read_text()
    assert result.stderr == (FIXTURES / "expected_report.txt").read_text()


def test_what_maps_where():
    result = run(str(CONFIG))
    doc = yaml.safe_load(result.stdout)
    # One upstream: the LiteLLM server that keeps running this config, reached with its master key.
    assert doc["upstreams"] == [{
        "name": "litellm", "url": "http://127.0.0.1:4000", "api_key_env": "LITELLM_MASTER_KEY",
        "models": ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "text-embedding-3-small", "llama-3.1-8b", "dall-e-3"]}]
    models = doc["models"]
    # Two deployments of gpt-4o are one model: LiteLLM balances between them.
    assert models["gpt-4o"] == {"owned_by": "openai", "pricing": {"input": 2.5, "output": 10, "cached_input": 1.25},
                                "aliases": ["gpt-4"], "fallbacks": ["gpt-4o-mini"]}
    # Prices from litellm_params when model_info has none; per token × 10⁶, exactly.
    assert models["gpt-4o-mini"]["pricing"] == {"input": 0.15, "output": 0.6}
    assert models["text-embedding-3-small"]["kind"] == "embedding"
    assert models["claude-sonnet"]["fallbacks"] == ["gpt-4o"]
    assert "anthropic/*" not in models
    report = result.stderr
    assert ("not imported: model_list[7].model_name: 'anthropic/*' is a wildcard route; list the models it "
            "should serve by name, or give the upstream models: '*'") in report
    assert "not imported: router_settings.fallbacks[1].claude-sonnet: fallback 'o1-preview' is not an imported model" \
        in report
    assert "left with LiteLLM: model_list[].litellm_params.rpm (2 deployments)" in report
    assert "LiteLLM still reads: ANTHROPIC_API_KEY, AZURE_API_BASE, AZURE_API_KEY, LITELLM_MASTER_KEY, " \
           "OPENAI_API_KEY" in report


def test_output_dir_gets_two_files_that_load_beside_the_existing_config(tmp_path):
    out = tmp_path / "config"
    out.mkdir()
    (out / "plans.yaml").write_text("plans:\n  free:\n    rpm: 60\n    models: [gpt-4o-mini, claude-sonnet]\n")
    result = run(str(CONFIG), "-o", str(out), "--litellm-url", "http://10.0.0.5:4000",
                 "--litellm-url", "http://10.0.0.6:4000", env={"LITELLM_MASTER_KEY": "sk-master"})
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.endswith(f"wrote {out}/upstreams.yaml, {out}/models.yaml: 2 upstreams, 6 models\n")
    assert "is not set here" not in result.stderr
    upstreams = yaml.safe_load((out / "upstreams.yaml").read_text())["upstreams"]
    assert [(u["name"], u["url"]) for u in upstreams] == [("litellm-1", "http://10.0.0.5:4000"),
                                                          ("litellm-2", "http://10.0.0.6:4000")]
    check = CliRunner().invoke(main, ["check-config", str(out)], env={"LITELLM_MASTER_KEY": "sk-master"})
    assert check.exit_code == 0, check.output
    assert f"{out}: OK (2 upstreams, 6 models, 1 plans" in check.stdout


def test_existing_files_are_kept_unless_forced(tmp_path):
    (tmp_path / "models.yaml").write_text("models: {}\n")
    refused = run(str(CONFIG), "-o", str(tmp_path))
    assert refused.exit_code == 2
    assert f"Error: {tmp_path}: models.yaml already there; use --force to replace" in refused.stderr
    assert (tmp_path / "models.yaml").read_text() == "models: {}\n"
    assert not (tmp_path / "upstreams.yaml").exists()
    forced = run(str(CONFIG), "-o", str(tmp_path), "--force")
    assert forced.exit_code == 0, forced.output
    assert "gpt-4o" in yaml.safe_load((tmp_path / "models.yaml").read_text())["models"]


def test_output_the_loader_refuses_is_not_written(tmp_path):
    # A plan in the target directory allows a model the LiteLLM config does not have.
    (tmp_path / "plans.yaml").write_text("plans:\n  free:\n    models: [o1-preview]\n")
    result = run(str(CONFIG), "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "plans.yaml:3: plans.free.models[0]" in result.stderr, result.stderr
    assert "'o1-preview'" in result.stderr
    assert "Error: the imported config does not load; nothing written" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plans.yaml"]


def test_a_master_key_written_in_the_file_is_never_copied_nor_printed(tmp_path):
    config = tmp_path / "litellm.yaml"
    config.write_text("model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o}\n"
                      "general_settings:\n  master_key: sk-very-secret-1234\n")
    result = run(str(config), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    written = (tmp_path / "out" / "upstreams.yaml").read_text() + (tmp_path / "out" / "models.yaml").read_text()
    assert "sk-very-secret" not in written + result.output
    assert "api_key_env: LITELLM_MASTER_KEY" in written
    assert ("note: general_settings.master_key is written in the file; export LITELLM_MASTER_KEY with its "
            "value before serve") in result.stderr


def test_no_master_key_means_no_api_key_env(tmp_path):
    config = tmp_path / "litellm.yaml"
    config.write_text("model_list:\n  - model_name: local\n    litellm_params: {model: ollama/llama3}\n")
    result = run(str(config))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["upstreams"] == [
        {"name": "litellm", "url": "http://127.0.0.1:4000", "models": ["local"]}]
    assert result.stderr == ("left with LiteLLM: model_list[].litellm_params.model\n"
                             "note: LiteLLM has no master_key: the upstream gets no api_key_env\n")


@pytest.mark.parametrize(("text", "message"), [
    (None, "Error: {path}: No such file or directory"),
    ("model_list: [\n", "Error: {path}:2: not YAML: expected the node content"),
    ("general_settings: {}\n", "Error: model_list: missing or empty; nothing to import"),
    ("- 1\n", "Error: the file: expected a mapping, found list"),
    ("model_list:\n  - litellm_params: {model: openai/x}\n",
     "Error: model_list[0].model_name: missing; every deployment needs the name clients ask for"),
    ("model_list:\n  - model_name: x\n    litellm_params: {api_key: k}\n",
     "Error: model_list[0].litellm_params.model: missing; every deployment names the provider's model"),
    ("model_list:\n  - model_name: x\n    litellm_params: {model: openai/x, input_cost_per_token: cheap}\n",
     "Error: model_list[0].litellm_params.input_cost_per_token: not a price: 'cheap'"),
    ("model_list:\n  - model_name: '*'\n    litellm_params: {model: '*'}\n",
     "Error: model_list: no model could be imported"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, text, message):
    path = tmp_path / "litellm.yaml"
    if text is not None:
        path.write_text(text)
    result = run(str(path))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert message.format(path=path) in result.stderr


def test_a_bad_litellm_url_is_the_loaders_error(tmp_path):
    result = run(str(CONFIG), "--litellm-url", "ftp://litellm:4000")
    assert result.exit_code == 2
    assert result.stderr == ("upstreams.yaml:4: upstreams[0].url: 'ftp://litellm:4000' does not have the expected "
                             "format (an http:// or https:// URL such as http://10.0.0.5:4000)\n"
                             "Error: the imported config does not load; nothing written\n")


@pytest.mark.skipif(not litellm_process.available(),
                    reason=f"LiteLLM is not installed at {litellm_process.EXECUTABLE}; run scripts/install-litellm")
async def test_real_litellm_serves_every_model_the_import_routes_to_it(tmp_path, monkeypatch):
    # The providers' keys are never used: nothing is asked of a provider, only of LiteLLM's model list.
    env = {"LITELLM_MASTER_KEY": litellm_process.MASTER_KEY, "OPENAI_API_KEY": "sk-unused",
           "AZURE_API_BASE": "https://example.invalid", "AZURE_API_KEY": "unused", "ANTHROPIC_API_KEY": "unused"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    proc = litellm_process.LiteLLMProcess(str(CONFIG.parent / "config.yaml"))
    proc.log_path = str(tmp_path / "litellm.log")
    proc.start()
    try:
        await proc.wait_ready()
        result = run(str(CONFIG), "-o", str(tmp_path / "config"), "--litellm-url", proc.url,
                     env={"LITELLM_MASTER_KEY": litellm_process.MASTER_KEY})
        assert result.exit_code == 0, result.output
        upstream = yaml.safe_load((tmp_path / "config" / "upstreams.yaml").read_text())["upstreams"][0]
        async with aiohttp.ClientSession() as session:
            async with session.get(upstream["url"] + "/v1/models",
                                   headers={"Authorization": "Bearer " + os.environ[upstream["api_key_env"]]}) as resp:
                assert resp.status == 200
                served = {m["id"] for m in (await resp.json())["data"]}
        assert set(upstream["models"]) <= served, served
    finally:
        proc.stop()
