"""`bluesminds routes explain REQUEST.json`: which rule a request meets and where it would go.

The same rules and balancer placement the gateway runs, without health state:
every configured upstream of each step is listed in the order it would be
tried (priority tiers, the local region before the others). Exit 0 when a
rule matched, 1 when none did (the default chain is printed all the same),
2 on a bad config or request file.
"""

from __future__ import annotations

import os
import sys

import click
import orjson

from ..config import ConfigError, Snapshot
from ..config.build import build_snapshot
from ..config.source import read_source
from ..routing.balancer import build_placement
from ..routing.rules import Facts, Step, chain_for, facts_of, first_match
from ..usage.tokens import estimate_prompt_tokens
from .options import default_config

EXIT_MATCHED, EXIT_NO_RULE, EXIT_BAD_INPUT = 0, 1, 2


@click.group()
def routes() -> None:
    """Inspect the routing rules."""


@routes.command("explain")
@click.argument("request_file", type=click.Path())
@click.option("--config", "config_path", default=None, help="Config directory or file (default: config).")
@click.option("--plan", default=None, help="The account's plan (default: auth.default_plan).")
@click.option("--key-tags", default="", help="The key's tags, comma-separated.")
@click.option("--header", "headers", multiple=True, help="A request header as 'name: value'; repeatable.")
def explain(request_file: str, config_path: str | None, plan: str | None, key_tags: str,
            headers: tuple[str, ...]) -> None:
    """Print the rule REQUEST_FILE (a JSON request body) matches, its chain and each step's upstreams."""
    path = config_path or default_config()
    try:
        snapshot, _ = build_snapshot(read_source(path), path, environ=os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_BAD_INPUT)
    body = _read_request(request_file)
    header_map = {}
    for text in headers:
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            _bad(f"--header {text!r}: expected 'name: value'")
        header_map[name.strip().lower()] = value.strip()
    plan = plan or snapshot.auth.default_plan
    if plan not in snapshot.plans:
        _bad(f"--plan {plan!r}: no such plan (defined: {', '.join(sorted(snapshot.plans))})")
    model = snapshot.resolve_model(body["model"])
    if model is None:
        _bad(f"{request_file}: model {body['model']!r} is not declared in models")
    facts = facts_of(body["model"], plan=plan, key_tags=[t.strip() for t in key_tags.split(",") if t.strip()],
                     body=body, headers=header_map)
    rule = first_match(snapshot, facts, model.name)
    prompt = estimate_prompt_tokens("chat" if "messages" in body else "completions", body)
    for line in explain_lines(snapshot, facts, rule, model, prompt):
        click.echo(line)
    sys.exit(EXIT_MATCHED if rule is not None else EXIT_NO_RULE)


def explain_lines(snapshot: Snapshot, facts: Facts, rule, model, prompt_tokens: int) -> list[str]:
    lines = [f"rule: {rule.name}" if rule is not None else "rule: none (no rule matches; default routing)",
             f"model: {facts.model}" + (f" ({model.name})" if model.name != facts.model else "")]
    if rule is not None and rule.split:
        total = sum(arm.weight for arm in rule.split)
        lines.append("split: " + ", ".join(f"{arm.model} {arm.weight}/{total}" for arm in rule.split))
        firsts = [snapshot.models[arm.model] for arm in rule.split]
    else:
        firsts = [snapshot.models[rule.rewrite] if rule is not None and rule.rewrite else model]
    for first in firsts:
        lines.append("chain:" if len(firsts) == 1 else f"chain ({first.name}):")
        for n, step in enumerate(chain_for(snapshot, facts, rule, first), 1):
            lines.append(f"  {n}. {step.model.name}: {_step_upstreams(snapshot, step, prompt_tokens)}")
    return lines


def _step_upstreams(snapshot: Snapshot, step: Step, prompt_tokens: int) -> str:
    window = step.model.context_window
    if window is not None and prompt_tokens > window:
        return f"skipped (about {prompt_tokens} prompt tokens, context window {window})"
    placement = build_placement(snapshot, step.model, step.upstreams, step.regions)
    tiers = " > ".join(", ".join(u.name for u in tier) for tier in placement.local) or (
        "no local upstream" if placement.remote else "no upstream")
    if placement.remote:
        tiers += "; other regions: " + " > ".join(", ".join(f"{u.name} ({u.region})" for u in tier)
                                                for tier in placement.remote)
    return tiers


def _read_request(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            body = orjson.loads(fh.read())
    except OSError as exc:
        _bad(f"{path}: {exc.strerror}")
    except orjson.JSONDecodeError as exc:
        _bad(f"{path}: not JSON ({exc})")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        _bad(f"{path}: expected a JSON object with a string `model`")
    return body


def _bad(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)
