"""Source (merged YAML) → validated, frozen Snapshot, or every problem found.

Validation is the same code path as loading, without starting anything, so
`bluesminds check-config` and a reload agree on what is valid.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
from typing import Any, Mapping

from . import schema
from .snapshot import (
    WILDCARD, AdminSettings, AuthSettings, DatabaseSettings, HealthSettings, ModelConfig,
    MAX_BODY_CEILING, MetricsSettings, PlanConfig, Pricing, RetrySettings, RoutingRule, ServerSettings,
    ServerTimeouts, Snapshot, Timeouts, UpstreamConfig,
)
from .source import ConfigError, ConfigProblem, Source, managed_file_for, read_source
from .units import parse_duration, parse_size

log = logging.getLogger("bluesminds.config")


def load_config(path: str, *, environ: Mapping[str, str] | None = None) -> Snapshot:
    """Read, validate and build the config at `path`; raise ConfigError listing every problem."""
    source = read_source(path)
    snapshot, warnings = build_snapshot(source, path, environ=os.environ if environ is None else environ)
    for warning in warnings:
        log.warning("config warning: %s", warning)
    return snapshot


def digest_of(source: Source) -> str:
    h = hashlib.sha256()
    for file in sorted(source.raw):
        h.update(file.encode() + b"\0" + source.raw[file] + b"\0")
    return h.hexdigest()[:16]


class _Builder:
    def __init__(self, source: Source, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.problems: list[ConfigProblem] = []
        self.warnings: list[str] = []

    def problem(self, path: tuple, message: str, value: Any = None, has_value: bool = False) -> None:
        loc = self.source.locate(path)
        self.problems.append(ConfigProblem(message, file=loc.file if loc else None,
                                           line=loc.line if loc else None, path=path,
                                           value=value, has_value=has_value))

    def secret(self, path: tuple, env_name: str | None) -> str | None:
        if env_name is None:
            return None
        value = self.environ.get(env_name)
        if not value:
            self.problem(path, f"environment variable {env_name} is not set (it holds a secret the config names)",
                         env_name, True)
            return None
        if not value.isascii() or not value.isprintable():
            # It is sent in an HTTP header: a CR or LF would inject headers. The value is never echoed.
            self.problem(path, f"environment variable {env_name} holds control or non-ASCII characters; "
                         "a key must be plain printable ASCII", env_name, True)
            return None
        return value


def build_snapshot(source: Source, path: str, *, environ: Mapping[str, str]) -> tuple[Snapshot, list[str]]:
    problems = schema.validate(source)
    if problems:
        raise ConfigError(problems)
    b = _Builder(source, environ)
    d = source.data

    server = _build_server(b, d.get("server") or {})
    db_raw = d.get("database") or {}
    db_path = db_raw.get("path", "data/bluesminds.db")
    if db_path != ":memory:" and not os.path.isabs(db_path):
        # Relative to the config's own location, not the process's working directory.
        base = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        db_path = os.path.normpath(os.path.join(os.path.abspath(base), db_path))
    database = DatabaseSettings(
        path=db_path,
        flush_interval=parse_duration(db_raw.get("flush_interval", "250ms")),
        flush_rows=db_raw.get("flush_rows", 500),
        queue_size=db_raw.get("queue_size", 100_000),
    )
    admin_raw = d.get("admin") or {}
    admin = AdminSettings(key_env=admin_raw.get("key_env"),
                          key=b.secret(("admin", "key_env"), admin_raw.get("key_env")))
    auth_raw = d.get("auth") or {}
    auth = AuthSettings(
        signup=auth_raw.get("signup", "open"),
        default_plan=auth_raw.get("default_plan", "free"),
        bcrypt_rounds=auth_raw.get("bcrypt_rounds", 12),
        password_min_length=auth_raw.get("password_min_length", 10),
        session_ttl=parse_duration(auth_raw.get("session_ttl", "7d")),
        secure_cookies=auth_raw.get("secure_cookies", False),
        key_cache_size=auth_raw.get("key_cache_size", 100_000),
        max_rotation_overlap=parse_duration(auth_raw.get("max_rotation_overlap", "24h")),
        login_attempts_per_minute=auth_raw.get("login_attempts_per_minute", 10),
        signups_per_hour=auth_raw.get("signups_per_hour", 10),
        key_failures_per_minute=auth_raw.get("key_failures_per_minute", 20),
        key_check_queue=auth_raw.get("key_check_queue", 16),
    )
    h = d.get("health") or {}
    health = HealthSettings(
        path=h.get("path", "/health/liveliness"),
        interval=parse_duration(h.get("interval", "10s")),
        timeout=parse_duration(h.get("timeout", "2s")),
        rise=h.get("rise", 2), fall=h.get("fall", 3), eject_after=h.get("eject_after", 3),
        cooldown=parse_duration(h.get("cooldown", "5s")),
        max_cooldown=parse_duration(h.get("max_cooldown", "2m")),
    )
    r = d.get("retry") or {}
    retry = RetrySettings(
        attempts=r.get("attempts", 3),
        backoff=parse_duration(r.get("backoff", "25ms")),
        max_backoff=parse_duration(r.get("max_backoff", "1s")),
        budget_ratio=r.get("budget_ratio", 0.2),
        min_retries=r.get("min_retries", 5),
    )

    models = _build_models(b, d.get("models") or {})
    model_lookup: dict[str, ModelConfig] = {}
    for model in models.values():
        for alias in (model.name,) + model.aliases:
            if alias in model_lookup:
                b.problem(("models", model.name), f"name or alias '{alias}' is used by two models "
                          f"('{model_lookup[alias].name}' and '{model.name}')", alias, True)
            model_lookup[alias] = model
    for model in models.values():
        for i, fallback in enumerate(model.fallbacks):
            if fallback not in model_lookup:
                b.problem(("models", model.name, "fallbacks", i), f"fallback model '{fallback}' is not declared in models",
                          fallback, True)

    overrides = d.get("upstream_overrides") or {}
    upstreams = _build_upstreams(b, d.get("upstreams") or [], models, overrides)
    by_name = {u.name: u for u in upstreams}
    for name in overrides:
        if name not in by_name:
            b.problem(("upstream_overrides", name), f"no upstream named '{name}'", name, True)
    for model in models.values():
        if not any(u.serves(model.name) for u in upstreams):
            b.problem(("models", model.name), f"model '{model.name}' is served by no upstream; "
                      "list it under an upstream's models or use models: '*'", model.name, True)
        if model.pricing is None:
            b.warnings.append(f"model '{model.name}' has no pricing: its requests will cost 0")

    plans = _build_plans(b, d.get("plans") or {}, models)
    if not plans:
        plans = {"free": PlanConfig(name="free")}
    if auth.default_plan not in plans:
        b.problem(("auth", "default_plan"), f"plan '{auth.default_plan}' is not defined in plans "
                  f"(defined: {', '.join(sorted(plans))})", auth.default_plan, True)

    routing = []
    for i, rule in enumerate(d.get("routing") or []):
        for j, name in enumerate(rule.get("upstreams", [])):
            if name not in by_name:
                b.problem(("routing", i, "upstreams", j), f"no upstream named '{name}'", name, True)
        routing.append(RoutingRule(model=rule["model"], upstreams=tuple(rule.get("upstreams", ())),
                                   regions=tuple(rule.get("regions", ()))))

    if b.problems:
        raise ConfigError(b.problems)
    snapshot = Snapshot(
        server=server, database=database, admin=admin, auth=auth, health=health, retry=retry,
        upstreams=tuple(upstreams), models=models, plans=plans, routing=tuple(routing),
        model_lookup=model_lookup, upstream_by_name=by_name, digest=digest_of(source),
        files=tuple(source.files), managed_file=managed_file_for(path),
    )
    return snapshot, b.warnings


def _trusted_proxies(b: _Builder, raw: Any) -> tuple:
    networks = []
    for i, text in enumerate(raw):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            b.problem(("server", "trusted_proxies", i),
                      "not an IP address or CIDR network (such as 10.0.0.0/8 or ::1)", text, True)
    return tuple(networks)


def _build_models(b: _Builder, raw: dict[str, Any]) -> dict[str, ModelConfig]:
    models: dict[str, ModelConfig] = {}
    for name, spec in raw.items():
        spec = spec or {}
        pricing = spec.get("pricing")
        models[name] = ModelConfig(
            name=name,
            upstream_model=spec.get("upstream_model", name),
            aliases=tuple(spec.get("aliases", ())),
            pricing=Pricing(input=pricing["input"], output=pricing["output"],
                            cached_input=pricing.get("cached_input")) if pricing else None,
            fallbacks=tuple(spec.get("fallbacks", ())),
            owned_by=spec.get("owned_by", "bluesminds"),
            created=spec.get("created", 1_700_000_000),
            kind=spec.get("kind", "chat"),
        )
    return models


def _build_upstreams(b: _Builder, raw: list[dict[str, Any]], models: Mapping[str, ModelConfig],
                     overrides: Mapping[str, Mapping[str, bool]]) -> list[UpstreamConfig]:
    seen: dict[str, int] = {}
    upstreams: list[UpstreamConfig] = []
    for i, spec in enumerate(raw):
        path = ("upstreams", i)
        name = spec["name"]
        if name in seen:
            b.problem(path + ("name",), f"duplicate upstream name '{name}' (also upstreams[{seen[name]}])", name, True)
        seen[name] = i
        served = spec["models"]
        served_t = (WILDCARD,) if served == WILDCARD else tuple(served)
        if served_t != (WILDCARD,):
            unknown = [m for m in served_t if m not in models]
            for m in unknown:
                b.problem(path + ("models", served_t.index(m)), f"model '{m}' is not declared in models", m, True)
            if not served_t:
                b.problem(path + ("models",), f"upstream '{name}' serves no model; list at least one or use '*'",
                          list(served_t), True)
        t = spec.get("timeouts") or {}
        loc = b.source.locate(path)
        override = overrides.get(name, {})
        upstreams.append(UpstreamConfig(
            name=name,
            url=spec["url"].rstrip("/"),
            weight=spec.get("weight", 1),
            priority=spec.get("priority", 1),
            models=served_t,
            region=spec.get("region"),
            timeouts=Timeouts(
                connect=parse_duration(t.get("connect", "5s")),
                first_byte=parse_duration(t.get("first_byte", "120s")),
                total=parse_duration(t.get("total", "10m")),
            ),
            max_concurrent=spec.get("max_concurrent"),
            api_key_env=spec.get("api_key_env"),
            api_key=b.secret(path + ("api_key_env",), spec.get("api_key_env")),
            enabled=override.get("enabled", spec.get("enabled", True)),
            drain=override.get("drain", spec.get("drain", False)),
            source=loc.file if loc else "",
        ))
    return upstreams


def _build_plans(b: _Builder, raw: dict[str, Any], models: Mapping[str, ModelConfig]) -> dict[str, PlanConfig]:
    plans: dict[str, PlanConfig] = {}
    for name, spec in raw.items():
        allowed = spec.get("models", WILDCARD)
        allowed_t = (WILDCARD,) if allowed == WILDCARD else tuple(allowed)
        if allowed_t != (WILDCARD,):
            for j, m in enumerate(allowed_t):
                if m not in models:
                    b.problem(("plans", name, "models", j), f"model '{m}' is not declared in models", m, True)
        plans[name] = PlanConfig(
            name=name,
            rpm=spec.get("rpm"), tpm=spec.get("tpm"),
            requests_per_day=spec.get("requests_per_day"), tokens_per_day=spec.get("tokens_per_day"),
            requests_per_month=spec.get("requests_per_month"), tokens_per_month=spec.get("tokens_per_month"),
            monthly_budget_usd=spec.get("monthly_budget_usd"),
            models=allowed_t,
            max_concurrent=spec.get("max_concurrent"),
            default_max_tokens=spec.get("default_max_tokens", 1024),
            price_usd_month=spec.get("price_usd_month", 0.0),
            per_user=spec.get("per_user", False),
        )
    return plans


def _build_server(b: _Builder, raw: dict[str, Any]) -> ServerSettings:
    max_body = parse_size(raw.get("max_body", "4MiB"))
    if max_body > MAX_BODY_CEILING:
        b.problem(("server", "max_body"), f"must be at most 1GiB ({MAX_BODY_CEILING} bytes)",
                  raw.get("max_body"), True)
    t = raw.get("timeouts") or {}
    for name in ("header", "body", "keepalive"):
        if name in t and parse_duration(t[name]) <= 0:
            b.problem(("server", "timeouts", name), "must be longer than 0s", t[name], True)
    m = raw.get("metrics") or {}
    listen = m.get("listen", "127.0.0.1:9464")
    host, _, port = listen.rpartition(":")
    if int(port) > 65535:
        b.problem(("server", "metrics", "listen"), "port must be at most 65535", listen, True)
    return ServerSettings(
        host=raw.get("host", "127.0.0.1"),
        port=raw.get("port", 8080),
        max_body_bytes=max_body,
        log_level=raw.get("log_level", "info"),
        access_log=raw.get("access_log", True),
        public_url=raw.get("public_url"),
        trusted_proxies=_trusted_proxies(b, raw.get("trusted_proxies") or ()),
        request_encodings=tuple(raw.get("request_encodings", ())),
        timeouts=ServerTimeouts(header=parse_duration(t.get("header", "60s")),
                                body=parse_duration(t.get("body", "60s")),
                                keepalive=parse_duration(t.get("keepalive", "75s"))),
        metrics=MetricsSettings(access=m.get("access", "admin"), listen_host=host.strip("[]"),
                                listen_port=min(int(port), 65535)),
    )
