"""`bluesminds import litellm-config`: a LiteLLM proxy config → BluesMinds upstreams and models.

A BluesMinds upstream is a LiteLLM server, not a provider. So the LiteLLM
server keeps its config and its provider keys and keeps calling the
providers; the gateway goes in front of it. What moves is what the gateway
itself decides: which model names clients may ask for, their prices, aliases
and fallbacks, and how to reach the LiteLLM server (its URL and master key).
Everything else is either left with LiteLLM (it still does it) or has no
home in the gateway; both are reported, nothing is dropped silently.

The output is checked by the same loader `serve` uses before anything is
written. Exit codes: 0 written, 2 bad input (click's own convention).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import click
import yaml

from ..config import ConfigError
from ..config.build import build_snapshot
from ..config.source import config_files, read_source

ENV_PREFIX = "os.environ/"
NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
DEFAULT_MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
OUTPUT_FILES = ("upstreams.yaml", "models.yaml")

# LiteLLM's modes that the gateway's `kind` names; other modes are routed by path and need no kind.
KINDS = {"chat": None, "completion": "completion", "embedding": "embedding"}
PATH_MODES = {"image_generation", "audio_transcription", "audio_speech", "rerank", "moderation", "responses"}
# Prices: LiteLLM writes USD per token, the gateway USD per million tokens.
PRICE_KEYS = {"input_cost_per_token": "input", "output_cost_per_token": "output",
              "cache_read_input_token_cost": "cached_input"}
# model_info keys that are LiteLLM's own bookkeeping: its deployment id and its cost-map lookup.
MODEL_INFO_KEPT = {"id", "base_model"}
FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
TOP_LEVEL = {"model_list", "router_settings", "litellm_settings", "general_settings", "environment_variables"}


class BadInput(click.ClickException):
    """A LiteLLM config the importer cannot read; click exits 2 for usage errors, so do we."""

    exit_code = 2


@dataclass
class Report:
    """What happened to each key of the LiteLLM config that was not simply carried over."""

    left_with_litellm: dict[str, int] = field(default_factory=dict)  # key -> how many places
    not_imported: list[str] = field(default_factory=list)  # "path: why"
    litellm_env: set[str] = field(default_factory=set)  # variables LiteLLM itself still reads
    notes: list[str] = field(default_factory=list)

    def leave(self, key: str) -> None:
        self.left_with_litellm[key] = self.left_with_litellm.get(key, 0) + 1

    def lines(self) -> list[str]:
        out = [f"not imported: {line}" for line in self.not_imported]
        for key in sorted(self.left_with_litellm):
            count = self.left_with_litellm[key]
            out.append(f"left with LiteLLM: {key}" + (f" ({count} deployments)" if count > 1 else ""))
        if self.litellm_env:
            out.append("LiteLLM still reads: " + ", ".join(sorted(self.litellm_env)))
        return out + [f"note: {line}" for line in self.notes]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{where}: expected a mapping, found {type(value).__name__}")
    return value


def _price(value: Any, where: str) -> float | int:
    try:
        per_million = Decimal(str(value)) * 1_000_000
    except InvalidOperation:
        raise BadInput(f"{where}: not a price: {value!r}") from None
    if isinstance(value, bool) or per_million < 0 or not per_million.is_finite():
        raise BadInput(f"{where}: not a price: {value!r}")
    # Decimal keeps 1.5e-07 × 10⁶ at 0.15, where floats would write 0.15000000000000002.
    per_million = per_million.normalize()
    return int(per_million) if per_million == per_million.to_integral_value() else float(per_million)


def _remember_env(value: Any, report: Report) -> None:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        report.litellm_env.add(value[len(ENV_PREFIX):])


class _Importer:
    def __init__(self, doc: dict[str, Any], urls: tuple[str, ...]) -> None:
        self.doc = doc
        self.urls = urls
        self.report = Report()
        self.models: dict[str, dict[str, Any]] = {}
        self.prices_from: dict[str, str] = {}

    def run(self) -> dict[str, Any]:
        for key, value in self.doc.items():
            if key not in TOP_LEVEL:  # guardrails, callbacks, …: LiteLLM goes on running them
                self._leave(key, value)
        model_list = self.doc.get("model_list")
        if not isinstance(model_list, list) or not model_list:
            raise BadInput("model_list: missing or empty; nothing to import")
        for i, entry in enumerate(model_list):
            self._deployment(i, _mapping(entry, f"model_list[{i}]"))
        if not self.models:
            raise BadInput("model_list: no model could be imported")
        router = _mapping(self.doc.get("router_settings"), "router_settings")
        settings = _mapping(self.doc.get("litellm_settings"), "litellm_settings")
        self._aliases(_mapping(router.get("model_group_alias"), "router_settings.model_group_alias"))
        for section, values in (("router_settings", router), ("litellm_settings", settings)):
            self._fallbacks(section, values)
            for key in values:
                if key not in FALLBACK_KINDS and not (section == "router_settings" and key == "model_group_alias"):
                    self._leave(f"{section}.{key}", values[key])
        general = _mapping(self.doc.get("general_settings"), "general_settings")
        key_env = self._master_key(general.get("master_key"))
        for key in general:
            if key != "master_key":
                self._leave(f"general_settings.{key}", general[key])
        for key, value in _mapping(self.doc.get("environment_variables"), "environment_variables").items():
            self._leave(f"environment_variables.{key}", value)
        return {"upstreams": self._upstreams(key_env), "models": self.models}

    def _deployment(self, i: int, entry: dict[str, Any]) -> None:
        where = f"model_list[{i}]"
        name = entry.get("model_name")
        params = _mapping(entry.get("litellm_params"), f"{where}.litellm_params")
        if not isinstance(name, str) or not name:
            raise BadInput(f"{where}.model_name: missing; every deployment needs the name clients ask for")
        if not isinstance(params.get("model"), str):
            raise BadInput(f"{where}.litellm_params.model: missing; every deployment names the provider's model")
        info = _mapping(entry.get("model_info"), f"{where}.model_info")
        for key in entry:
            if key not in ("model_name", "litellm_params", "model_info"):
                self._leave(f"model_list[].{key}", entry[key])  # rpm/tpm: LiteLLM's routing between deployments
        if "*" in name:
            self.report.not_imported.append(
                f"{where}.model_name: '{name}' is a wildcard route; list the models it should serve by name, "
                "or give the upstream models: '*'")
            self._leave_params(params)
            return
        if not NAME_OK.match(name):
            self.report.not_imported.append(
                f"{where}.model_name: '{name}' is not a valid model name (letters, digits and ._:/- , "
                "at most 128)")
            self._leave_params(params)
            return
        model = self.models.setdefault(name, {})
        provider, _, _ = params["model"].partition("/")
        if "/" in params["model"] and "owned_by" not in model:
            model["owned_by"] = provider
        self._pricing(name, model, where, params, info)
        self._mode(name, model, where, info)
        for key in info:
            if key not in PRICE_KEYS and key != "mode" and key not in MODEL_INFO_KEPT:
                self.report.not_imported.append(f"{where}.model_info.{key}: the gateway has no such model setting")
            elif key in MODEL_INFO_KEPT:
                self._leave(f"model_list[].model_info.{key}", info[key])
        self._leave_params({k: v for k, v in params.items() if k not in PRICE_KEYS})

    def _leave_params(self, params: dict[str, Any]) -> None:
        for key, value in params.items():
            self._leave(f"model_list[].litellm_params.{key}", value)

    def _leave(self, key: str, value: Any) -> None:
        self.report.leave(key)
        _remember_env(value, self.report)

    def _pricing(self, name: str, model: dict[str, Any], where: str, params: dict[str, Any],
                 info: dict[str, Any]) -> None:
        pricing: dict[str, Any] = {}
        for source, values in ((f"{where}.model_info", info), (f"{where}.litellm_params", params)):
            for key, field_name in PRICE_KEYS.items():
                if key in values and field_name not in pricing:
                    pricing[field_name] = _price(values[key], f"{source}.{key}")
        if not pricing:
            return
        if "input" not in pricing or "output" not in pricing:
            self.report.not_imported.append(
                f"{where}: pricing for '{name}' needs both input_cost_per_token and output_cost_per_token")
            return
        if "pricing" in model:
            if model["pricing"] != pricing:
                self.report.notes.append(
                    f"'{name}': {where} prices it differently from {self.prices_from[name]}; "
                    f"kept the prices of {self.prices_from[name]}")
            return
        model["pricing"] = pricing
        self.prices_from[name] = where

    def _mode(self, name: str, model: dict[str, Any], where: str, info: dict[str, Any]) -> None:
        mode = info.get("mode")
        if mode is None:
            return
        if mode in KINDS:
            if KINDS[mode] and model.get("kind", KINDS[mode]) != KINDS[mode]:
                self.report.notes.append(f"'{name}': {where} has mode {mode}, another deployment "
                                         f"{model['kind']}; kept {model['kind']}")
            elif KINDS[mode]:
                model["kind"] = KINDS[mode]
        elif mode not in PATH_MODES:
            self.report.not_imported.append(f"{where}.model_info.mode: '{mode}' is not a mode the gateway knows")
        # Image, audio, rerank and moderation models are told apart by the route they are called on.

    def _aliases(self, aliases: dict[str, Any]) -> None:
        for alias, target in aliases.items():
            where = f"router_settings.model_group_alias.{alias}"
            if isinstance(target, dict):
                target = target.get("model")
            if not isinstance(target, str) or target not in self.models:
                self.report.not_imported.append(f"{where}: '{target}' is not an imported model")
            elif alias in self.models or not NAME_OK.match(str(alias)):
                self.report.not_imported.append(f"{where}: '{alias}' cannot be an alias (a model or not a name)")
            else:
                self.models[target].setdefault("aliases", []).append(alias)

    def _fallbacks(self, section: str, values: dict[str, Any]) -> None:
        for kind in FALLBACK_KINDS:
            if kind not in values:
                continue
            if kind != "fallbacks":
                # The gateway falls back on failure only; choosing by context window or refusal is LiteLLM's.
                self._leave(f"{section}.{kind}", values[kind])
                continue
            rules = values[kind] if isinstance(values[kind], list) else []
            for j, rule in enumerate(rules):
                for model, targets in _mapping(rule, f"{section}.fallbacks[{j}]").items():
                    self._fallback(f"{section}.fallbacks[{j}].{model}", model, targets)

    def _fallback(self, where: str, model: str, targets: Any) -> None:
        if model not in self.models:
            self.report.not_imported.append(f"{where}: '{model}' is not an imported model")
            return
        chain = self.models[model].setdefault("fallbacks", [])
        for target in targets if isinstance(targets, list) else [targets]:
            if target not in self.models:
                self.report.not_imported.append(f"{where}: fallback '{target}' is not an imported model")
            elif target not in chain and target != model:
                chain.append(target)
        if not chain:
            del self.models[model]["fallbacks"]

    def _master_key(self, master_key: Any) -> str | None:
        if master_key is None:
            self.report.notes.append("LiteLLM has no master_key: the upstream gets no api_key_env")
            return None
        if isinstance(master_key, str) and master_key.startswith(ENV_PREFIX):
            self.report.litellm_env.add(master_key[len(ENV_PREFIX):])
            return master_key[len(ENV_PREFIX):]
        # Never copy a secret into YAML, nor print it: the config names a variable instead.
        self.report.notes.append(f"general_settings.master_key is written in the file; export "
                                 f"{DEFAULT_MASTER_KEY_ENV} with its value before serve")
        return DEFAULT_MASTER_KEY_ENV

    def _upstreams(self, key_env: str | None) -> list[dict[str, Any]]:
        upstreams = []
        for i, url in enumerate(self.urls):
            upstream: dict[str, Any] = {"name": "litellm" if len(self.urls) == 1 else f"litellm-{i + 1}",
                                        "url": url, "models": list(self.models)}
            if key_env:
                upstream["api_key_env"] = key_env
            upstreams.append(upstream)
        return upstreams


def convert(doc: Any, urls: tuple[str, ...]) -> tuple[dict[str, Any], Report]:
    """The `upstreams` and `models` sections for `doc`, a parsed LiteLLM config, and what was not carried over."""
    importer = _Importer(_mapping(doc, "the file"), urls)
    return importer.run(), importer.report


def render(sections: dict[str, Any], source: str) -> dict[str, str]:
    """One YAML file per section, with a header saying where it came from."""
    header = f"# Imported from {source} by `bluesminds import litellm-config`.\n"
    return {f"{name}.yaml": header + yaml.safe_dump({name: sections[name]}, sort_keys=False,
                                                   default_flow_style=None, width=100)
            for name in ("upstreams", "models")}


def validate(files: dict[str, str], out_dir: str | None, environ: dict[str, str]) -> list[str]:
    """The loader's problems with `files` placed into `out_dir` beside its other config files."""
    with tempfile.TemporaryDirectory(prefix="bluesminds-import-") as staging:
        if out_dir and os.path.isdir(out_dir):
            for existing in config_files(out_dir):
                if os.path.basename(existing) not in files:
                    shutil.copy(existing, staging)
        for name, text in files.items():
            with open(os.path.join(staging, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        try:
            build_snapshot(read_source(staging), staging, environ=environ)
        except ConfigError as exc:
            return [str(problem).replace(staging + os.sep, "") for problem in exc.problems]
    return []


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise BadInput(f"{where}: not YAML: {getattr(exc, 'problem', exc)}") from None


@click.group("import")
def import_group() -> None:
    """Import configuration from another gateway."""


@import_group.command("litellm-config")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Write upstreams.yaml and models.yaml into this config directory (else print them).")
@click.option("--litellm-url", "urls", multiple=True, default=("http://127.0.0.1:4000",), show_default=True,
              help="Where the LiteLLM server running this config listens; repeat for several replicas.")
@click.option("--force", is_flag=True, help="Replace upstreams.yaml and models.yaml if they exist.")
def litellm_config(config: str, out_dir: str | None, urls: tuple[str, ...], force: bool) -> None:
    """Turn the model_list of LiteLLM proxy CONFIG into BluesMinds upstreams and models."""
    sections, report = convert(_read(config), urls)
    files = render(sections, os.path.basename(config))
    if out_dir and not force:
        present = [name for name in files if os.path.exists(os.path.join(out_dir, name))]
        if present:
            raise BadInput(f"{out_dir}: {', '.join(present)} already there; use --force to replace")
    placeholders = {u["api_key_env"]: "set-at-serve-time" for u in sections["upstreams"]
                    if u.get("api_key_env") and not os.environ.get(u["api_key_env"])}
    problems = validate(files, out_dir, {**os.environ, **placeholders})
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        raise BadInput("the imported config does not load; nothing written")
    for line in report.lines():
        click.echo(line, err=True)
    for name in placeholders:
        click.echo(f"note: {name} is not set here; export it (LiteLLM's master key) before serve", err=True)
    if out_dir is None:
        click.echo(files["upstreams.yaml"] + files["models.yaml"].split("\n", 1)[1], nl=False)
        return
    os.makedirs(out_dir, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    click.echo(f"wrote {', '.join(os.path.join(out_dir, n) for n in files)}: {len(sections['upstreams'])} "
               f"upstreams, {len(sections['models'])} models", err=True)
