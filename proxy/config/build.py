"""Source (merged YAML) → validated, frozen Snapshot, or every problem found.

Validation is the same code path as loading, without starting anything, so
`bluesminds check-config` and a reload agree on what is valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import os
from typing import Any, Mapping, TypeVar

from . import schema
from .snapshot import (
    WILDCARD, AdminSettings, AuthSettings, BillingSettings, CorsSettings, CreemSettings, DatabaseSettings,
    HealthSettings, LimitsSettings, ModelConfig, MAX_BODY_CEILING, MetricsSettings, PlanConfig, PlanPrice,
    Pricing, RetrySettings, RoutingRule, ServerSettings, SplitArm, ServerTimeouts, Snapshot, Timeouts, UpstreamConfig,
    WebhookEndpointConfig, WebhookSettings,
)
from .source import ConfigError, ConfigProblem, Source, managed_file_for, read_source
from ..billing.money import BadAmount, to_nano
from ..capture.settings import build_capture
from .units import parse_duration, parse_size
from ..cache.settings import CacheSettings, PlanCache
from .urls import BadURL, normalise_upstream_url

log = logging.getLogger("bluesminds.config")
T = TypeVar("T")


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


# Deployment-wide defaults from the environment, for a config that does not name them
# (one config file for several machines or containers, and the test suite's second pass).
DATABASE_URL_ENV = "BLUESMINDS_DATABASE_URL"
LIMITS_BACKEND_ENV = "BLUESMINDS_LIMITS_BACKEND"


def _env_default(section: Mapping[str, Any] | None, name: str, environ: Mapping[str, str],
                 env_name: str) -> Mapping[str, Any]:
    section = section or {}
    value = environ.get(env_name)
    if not value or name in section:
        return section
    return {**section, name: value}


def build_snapshot(source: Source, path: str, *, environ: Mapping[str, str]) -> tuple[Snapshot, list[str]]:
    problems = schema.validate(source)
    if problems:
        raise ConfigError(problems)
    b = _Builder(source, environ)
    d = source.data

    server = build_server(b, d.get("server") or {})
    database = build_database(b, _env_default(d.get("database"), "url", environ, DATABASE_URL_ENV), path)
    admin = build_admin(b, d.get("admin") or {})
    auth = build_auth(d.get("auth") or {})
    health = _settings(HealthSettings, d.get("health") or {}, durations=_HEALTH_DURATIONS)
    retry = _settings(RetrySettings, d.get("retry") or {}, durations=("backoff", "max_backoff", "deadline"))
    limits = build_limits(b, _env_default(d.get("limits"), "backend", environ, LIMITS_BACKEND_ENV))
    models = _build_models(b, d.get("models") or {})
    model_lookup = _model_lookup(b, models)
    overrides = d.get("upstream_overrides") or {}
    upstreams = _build_upstreams(b, d.get("upstreams") or [], models, overrides)
    by_name = {u.name: u for u in upstreams}
    _check_overrides(b, overrides, by_name)
    _check_models_served(b, models, upstreams)
    plans = _build_plans(b, d.get("plans") or {}, models) or {"free": PlanConfig(name="free")}
    if auth.default_plan not in plans:
        b.problem(("auth", "default_plan"), f"plan '{auth.default_plan}' is not defined in plans "
                  f"(defined: {', '.join(sorted(plans))})", auth.default_plan, True)
    routing = _build_routing(b, d.get("routing") or [], by_name=by_name, lookup=model_lookup, plans=plans,
                             upstreams=upstreams, local_region=server.region)
    webhooks = build_webhooks(b, d.get("webhooks") or {})
    billing = build_billing(b, d.get("billing") or {})
    capture = build_capture(d.get("capture") or {}, lambda path, message, value: b.problem(path, message, value, True),
                            frozenset(plans))
    cache = build_cache(b, d.get("cache") or {}, limits)
    _check_plan_cache_ttls(b, plans, cache)

    if b.problems:
        raise ConfigError(b.problems)
    snapshot = Snapshot(
        server=server, database=database, admin=admin, auth=auth, health=health, retry=retry,
        upstreams=tuple(upstreams), models=models, plans=plans, routing=tuple(routing), limits=limits,
        billing=billing, model_lookup=model_lookup, upstream_by_name=by_name, digest=digest_of(source),
        files=tuple(source.files), managed_file=managed_file_for(path), webhooks=webhooks,
        capture=capture,
        cache=cache,
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


# -- settings sections ------------------------------------------------------------
#
# Each default lives once, on the settings dataclass: a builder passes on only
# the keys the YAML sets, converting durations and sizes to seconds and bytes.

_HEALTH_DURATIONS = ("interval", "timeout", "cooldown", "max_cooldown")


def _settings(cls: type[T], raw: Mapping[str, Any], *, durations: tuple[str, ...] = (),
              rename: Mapping[str, str] | None = None, **extra: Any) -> T:
    rename = rename or {}
    kwargs = {rename.get(key, key): parse_duration(value) if key in durations else value
              for key, value in raw.items()}
    kwargs.update(extra)
    return cls(**kwargs)


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def build_database(b: _Builder, raw: Mapping[str, Any], config_path: str) -> DatabaseSettings:
    url = raw.get("url")
    raw = dict(raw)
    if isinstance(url, str) and url.startswith("sqlite:///"):
        # sqlite:///relative/file or sqlite:////absolute/file, as SQLAlchemy spells them.
        raw["path"] = url[len("sqlite:///"):]
        raw["url"] = None
    db_path = raw.get("path", _default(DatabaseSettings, "path"))
    if db_path != ":memory:":
        if not os.path.isabs(db_path):
            # Relative to the config's own location, not the process's working directory.
            base = config_path if os.path.isdir(config_path) else os.path.dirname(os.path.abspath(config_path))
            db_path = os.path.normpath(os.path.join(os.path.abspath(base), db_path))
        if os.path.isdir(db_path):
            b.problem(("database", "path"), f"{db_path} is a directory; name the database file in it, "
                      f"such as {os.path.join(db_path, 'bluesminds.db')}", db_path, True)
    return _settings(DatabaseSettings, {**raw, "path": db_path}, durations=("flush_interval",))


def build_limits(b: _Builder, raw: Mapping[str, Any]) -> LimitsSettings:
    limits = _settings(LimitsSettings, raw, durations=("hold_ttl",))
    if "hold_ttl" in raw and limits.hold_ttl < 0.3:
        # Renewal runs every third of it; shorter than this and a busy loop misses renewals.
        b.problem(("limits", "hold_ttl"), "must be at least 300ms", raw["hold_ttl"], True)
    return limits


def build_admin(b: _Builder, raw: Mapping[str, Any]) -> AdminSettings:
    key_env = raw.get("key_env")
    return AdminSettings(key_env=key_env, key=b.secret(("admin", "key_env"), key_env))


def build_auth(raw: Mapping[str, Any]) -> AuthSettings:
    return _settings(AuthSettings, raw, durations=("session_ttl", "max_rotation_overlap"))


# -- models, upstreams, plans, routing ---------------------------------------------


def _model_lookup(b: _Builder, models: Mapping[str, ModelConfig]) -> dict[str, ModelConfig]:
    lookup: dict[str, ModelConfig] = {}
    for model in models.values():
        for alias in (model.name,) + model.aliases:
            if alias in lookup:
                b.problem(("models", model.name), f"name or alias '{alias}' is used by two models "
                          f"('{lookup[alias].name}' and '{model.name}')", alias, True)
            lookup[alias] = model
    for model in models.values():
        for i, fallback in enumerate(model.fallbacks):
            if fallback not in lookup:
                b.problem(("models", model.name, "fallbacks", i),
                          f"fallback model '{fallback}' is not declared in models", fallback, True)
    return lookup


def _check_overrides(b: _Builder, overrides: Mapping[str, Any], by_name: Mapping[str, UpstreamConfig]) -> None:
    for name in overrides:
        if name not in by_name:
            b.problem(("upstream_overrides", name), f"no upstream named '{name}'", name, True)


def _check_models_served(b: _Builder, models: Mapping[str, ModelConfig],
                         upstreams: list[UpstreamConfig]) -> None:
    for model in models.values():
        if not any(u.serves(model.name) for u in upstreams):
            b.problem(("models", model.name), f"model '{model.name}' is served by no upstream; "
                      "list it under an upstream's models or use models: '*'", model.name, True)
        if model.pricing is None:
            b.warnings.append(f"model '{model.name}' has no pricing: its requests will cost 0")


def _build_routing(b: _Builder, raw: list[dict[str, Any]], *, by_name: Mapping[str, UpstreamConfig],
                   lookup: Mapping[str, ModelConfig], plans: Mapping[str, PlanConfig],
                   upstreams: list[UpstreamConfig], local_region: str | None) -> list[RoutingRule]:
    """Every name a rule uses must exist: a typo would otherwise route nothing, silently."""
    regions = {u.region for u in upstreams if u.region}
    if local_region is not None and local_region not in regions:
        b.warnings.append(f"server.region '{local_region}' tags no upstream: only untagged upstreams are local")
    seen: dict[str, int] = {}
    routing = []
    for i, rule in enumerate(raw):
        path = ("routing", i)
        name = rule.get("name", f"rule-{i + 1}")
        if name in seen:
            b.problem(path + ("name",), f"two routing rules are named '{name}' (also routing[{seen[name]}])",
                      name, True)
        seen[name] = i
        when = rule.get("when") or {}
        plan_names = when.get("plan", ())
        plan_names = (plan_names,) if isinstance(plan_names, str) else tuple(plan_names)
        for j, plan in enumerate(plan_names):
            if plan not in plans:
                where = path + ("when", "plan") + ((j,) if isinstance(when.get("plan"), list) else ())
                b.problem(where, f"no plan named '{plan}' (defined: {', '.join(sorted(plans))})", plan, True)

        def canonical(where: tuple, model: str) -> str:
            found = lookup.get(model)
            if found is None:
                b.problem(path + where, f"model '{model}' is not declared in models", model, True)
                return model
            return found.name

        rewrite = canonical(("rewrite",), rule["rewrite"]) if "rewrite" in rule else None
        split = tuple(SplitArm(model=canonical(("split", j, "model"), arm["model"]), weight=arm["weight"])
                      for j, arm in enumerate(rule.get("split", ())))
        fallbacks = None
        if "fallbacks" in rule:
            fallbacks = tuple(canonical(("fallbacks", j), m) for j, m in enumerate(rule["fallbacks"]))
        for j, upstream in enumerate(rule.get("upstreams", [])):
            if upstream not in by_name:
                b.problem(path + ("upstreams", j), f"no upstream named '{upstream}'", upstream, True)
        for j, region in enumerate(rule.get("regions", [])):
            if region not in regions:
                b.problem(path + ("regions", j), f"no upstream is in region '{region}' "
                          f"(regions: {', '.join(sorted(regions)) or 'none'})", region, True)
        routing.append(RoutingRule(
            name=name, model=rule.get("model", WILDCARD), plans=plan_names,
            key_tags=tuple(when.get("key_tags", ())),
            metadata=tuple((k, _scalar_text(v)) for k, v in (when.get("metadata") or {}).items()),
            tags=tuple(when.get("tags", ())),
            headers=tuple((k.lower(), v) for k, v in (when.get("headers") or {}).items()),
            rewrite=rewrite, split=split, fallbacks=fallbacks,
            upstreams=tuple(rule.get("upstreams", ())), regions=tuple(rule.get("regions", ()))))
    return routing


def _scalar_text(value: Any) -> str:
    """A metadata value as the request's would compare: JSON's spelling of true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _build_models(b: _Builder, raw: dict[str, Any]) -> dict[str, ModelConfig]:
    models: dict[str, ModelConfig] = {}
    for name, spec in raw.items():
        spec = dict(spec or {})
        pricing = spec.pop("pricing", None)
        models[name] = _settings(
            ModelConfig, spec, name=name, upstream_model=spec.get("upstream_model", name),
            aliases=tuple(spec.get("aliases", ())), fallbacks=tuple(spec.get("fallbacks", ())),
            pricing=build_pricing(b, ("models", name, "pricing"), pricing) if pricing else None)
    return models


def build_pricing(b: _Builder, path: tuple, raw: Mapping[str, Any]) -> Pricing:
    """USD per 1M tokens as written → exact integer nano-dollars per 1M tokens."""
    values: dict[str, int | None] = {}
    for name in ("input", "output", "cached_input"):
        if raw.get(name) is None:
            continue
        try:
            values[name + "_nano"] = to_nano(raw[name])
        except BadAmount as exc:
            b.problem(path + (name,), f"not a price: {exc}", raw[name], True)
            values[name + "_nano"] = 0
    return Pricing(**values)


def _served(served: Any) -> tuple[str, ...]:
    return (WILDCARD,) if served == WILDCARD else tuple(served)


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
        served = _served(spec["models"])
        if served != (WILDCARD,):
            for j, m in enumerate(served):
                if m not in models:
                    b.problem(path + ("models", j), f"model '{m}' is not declared in models", m, True)
            if not served:
                b.problem(path + ("models",), f"upstream '{name}' serves no model; list at least one or use '*'",
                          [], True)
        loc = b.source.locate(path)
        upstreams.append(_settings(
            UpstreamConfig, {**spec, **overrides.get(name, {})},
            url=_upstream_url(b, path + ("url",), name, spec["url"]),
            models=served,
            timeouts=_settings(Timeouts, spec.get("timeouts") or {}, durations=("connect", "first_byte", "total")),
            api_key=b.secret(path + ("api_key_env",), spec.get("api_key_env")),
            source=loc.file if loc else "",
        ))
    return upstreams


def _upstream_url(b: _Builder, path: tuple, name: str, url: str) -> str:
    try:
        clean, stripped = normalise_upstream_url(url)
    except BadURL as exc:
        b.problem(path, str(exc), url, True)
        return url
    if stripped:
        b.warnings.append(f"upstream '{name}': url {url!r} ends in /v1, which the gateway adds itself; "
                          f"using {clean!r}")
    return clean


def _build_plans(b: _Builder, raw: dict[str, Any], models: Mapping[str, ModelConfig]) -> dict[str, PlanConfig]:
    plans: dict[str, PlanConfig] = {}
    for name, spec in raw.items():
        allowed = _served(spec.get("models", WILDCARD))
        if allowed != (WILDCARD,):
            for j, m in enumerate(allowed):
                if m not in models:
                    b.problem(("plans", name, "models", j), f"model '{m}' is not declared in models", m, True)
        spec = dict(spec)
        price = _plan_price(b, name, spec.pop("price", None), spec.pop("price_usd_month", None), models)
        cache = _plan_cache(b, name, spec.pop("cache", None) or {})
        plans[name] = _settings(PlanConfig, spec, name=name, models=allowed, price=price, cache=cache)
    return plans


def _plan_price(b: _Builder, plan: str, raw: Mapping[str, Any] | None, legacy: Any,
                models: Mapping[str, ModelConfig]) -> PlanPrice:
    """`price:` (fee, inclusions, overage), or the older `price_usd_month: N` as the fee alone."""
    if raw is not None and legacy is not None:
        b.problem(("plans", plan, "price_usd_month"), "give the monthly fee once: price_usd_month is "
                  "the older spelling of price.monthly; remove it", legacy, True)
    raw = dict(raw or {})
    fee = raw.get("monthly", legacy if legacy is not None else 0)
    try:
        fee_nano = to_nano(fee)
    except BadAmount as exc:
        b.problem(("plans", plan, "price", "monthly"), f"not an amount: {exc}", fee, True)
        fee_nano = 0
    overage = []
    for model, pricing in (raw.get("overage") or {}).items():
        if model not in models:
            b.problem(("plans", plan, "price", "overage", model), f"model '{model}' is not declared in models",
                      model, True)
            continue
        overage.append((model, build_pricing(b, ("plans", plan, "price", "overage", model), pricing)))
    return PlanPrice(monthly_fee_nano=fee_nano, included_tokens=int(raw.get("included_tokens") or 0),
                     overage=tuple(sorted(overage)), creem_product_id=raw.get("creem_product_id"))


def build_cache(b: _Builder, raw: Mapping[str, Any], limits: LimitsSettings) -> CacheSettings:
    raw = dict(raw)
    if raw.get("backend") == "limits":
        if not limits.shared:
            b.problem(("cache", "backend"), "'limits' reuses the Redis of limits.backend, which is memory; "
                      "name a redis:// URL here or set limits.backend", "limits", True)
        raw["backend"] = limits.backend
    for name in ("max_bytes", "max_entry_bytes"):
        if name in raw:
            raw[name] = parse_size(raw[name])
    return _settings(CacheSettings, raw, durations=("ttl_seconds", "max_ttl_seconds"))


def _plan_cache(b: _Builder, plan: str, raw: Mapping[str, Any]) -> PlanCache:
    raw = dict(raw)
    price = raw.pop("price_per_hit", 0)
    try:
        price_nano = to_nano(price)
    except BadAmount as exc:
        b.problem(("plans", plan, "cache", "price_per_hit"), f"not an amount: {exc}", price, True)
        price_nano = 0
    return _settings(PlanCache, raw, durations=("ttl_seconds",), price_per_hit_nano=price_nano)


def _check_plan_cache_ttls(b: _Builder, plans: Mapping[str, PlanConfig], cache: CacheSettings) -> None:
    for name, plan in plans.items():
        ttl = plan.cache.ttl_seconds
        if ttl is not None and ttl > cache.max_ttl_seconds:
            b.problem(("plans", name, "cache", "ttl_seconds"), f"{ttl:g}s is longer than cache.max_ttl_seconds "
                      f"({cache.max_ttl_seconds:g}s); shorten it or raise the bound", ttl, True)


def build_billing(b: _Builder, raw: Mapping[str, Any]) -> BillingSettings:
    raw = dict(raw)
    creem = dict(raw.pop("creem", None) or {})
    referral = raw.pop("referral", None) or {}
    if "reward_tokens" in referral:
        raw["referral_reward_tokens"] = referral["reward_tokens"]
    if creem:
        if "base_url" in creem:
            creem["base_url"] = str(creem["base_url"]).rstrip("/")
        creem["api_key"] = b.secret(("billing", "creem", "api_key_env"), creem.get("api_key_env"))
        creem["webhook_secret"] = b.secret(("billing", "creem", "webhook_secret_env"),
                                           creem.get("webhook_secret_env"))
        raw["creem"] = _settings(CreemSettings, creem, durations=("timeout",))
    billing = _settings(BillingSettings, raw, durations=("invoice_grace", "invoice_every"))
    if billing.invoice_grace > 28 * 86400:
        # Longer, and a month's invoice would still be a draft when the next month's is due.
        b.problem(("billing", "invoice_grace"), "must be at most 28d", raw.get("invoice_grace"), True)
    return billing


def build_server(b: _Builder, raw: Mapping[str, Any]) -> ServerSettings:
    raw = dict(raw)
    if "max_body" in raw:
        written = raw["max_body"]
        raw["max_body"] = parse_size(written)
        if raw["max_body"] > MAX_BODY_CEILING:
            b.problem(("server", "max_body"), f"must be at most 1GiB ({MAX_BODY_CEILING} bytes)",
                      written, True)
    if "max_upstream_body" in raw:
        raw["max_upstream_body"] = parse_size(raw["max_upstream_body"])
    if "trusted_proxies" in raw:
        raw["trusted_proxies"] = _trusted_proxies(b, raw["trusted_proxies"] or ())
    if "request_encodings" in raw:
        raw["request_encodings"] = tuple(raw["request_encodings"])
    if "timeouts" in raw:
        t = raw["timeouts"] or {}
        for name in ("header", "body", "keepalive"):
            if name in t and parse_duration(t[name]) <= 0:
                b.problem(("server", "timeouts", name), "must be longer than 0s", t[name], True)
        raw["timeouts"] = _settings(ServerTimeouts, t, durations=("header", "body", "keepalive"))
    if "metrics" in raw:
        m = dict(raw["metrics"] or {})
        if "listen" in m:
            host, _, port = m.pop("listen").rpartition(":")
            if int(port) > 65535:
                b.problem(("server", "metrics", "listen"), "port must be at most 65535", f"{host}:{port}", True)
            m["listen_host"], m["listen_port"] = host.strip("[]"), min(int(port), 65535)
        raw["metrics"] = _settings(MetricsSettings, m)
    if "cors" in raw:
        c = {k: tuple(v) if isinstance(v, list) else v for k, v in (raw["cors"] or {}).items()}
        if "allow_methods" in c:
            c["allow_methods"] = tuple(m.upper() for m in c["allow_methods"])
        raw["cors"] = _settings(CorsSettings, c) if c.get("allow_origins") else None
    return _settings(ServerSettings, raw, rename={"max_body": "max_body_bytes",
                                                 "max_upstream_body": "max_upstream_body_bytes"})


def build_webhooks(b: _Builder, raw: Mapping[str, Any]) -> WebhookSettings:
    # Imported here: the webhooks package imports the config, not the other way round.
    from ..webhooks.secrets import BadKey, parse_key
    from ..webhooks.signing import BadSecret, secret_key

    networks = []
    for i, text in enumerate(raw.get("allow_networks") or ()):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            b.problem(("webhooks", "allow_networks", i),
                      "not an IP address or CIDR network (such as 10.0.0.0/8 or ::1)", text, True)
    allow_http = bool(raw.get("allow_http", False))
    key_env = raw.get("encryption_key_env")
    key = None
    text = b.secret(("webhooks", "encryption_key_env"), key_env)
    if text is not None:
        try:
            key = parse_key(text)
        except BadKey as exc:
            b.problem(("webhooks", "encryption_key_env"), f"environment variable {key_env} {exc}")
    endpoints, seen = [], set()
    for i, spec in enumerate(raw.get("endpoints") or ()):
        path = ("webhooks", "endpoints", i)
        url = spec["url"]
        name = spec.get("name", url)
        if name in seen:
            b.problem(path + ("name",), f"two webhook endpoints are named {name!r}; names must differ", name, True)
        seen.add(name)
        if url.startswith("http://") and not allow_http:
            b.problem(path + ("url",), "must use https; set webhooks.allow_http to allow plain http", url, True)
        secret = b.secret(path + ("secret_env",), spec["secret_env"])
        if secret is not None:
            try:
                secret_key(secret)
            except BadSecret as exc:
                b.problem(path + ("secret_env",), f"environment variable {spec['secret_env']}: {exc}")
        endpoints.append(WebhookEndpointConfig(name=name, url=url, events=tuple(spec["events"]),
                                               secret_env=spec["secret_env"], secret=secret or ""))
    return _settings(WebhookSettings, {k: v for k, v in raw.items()
                                       if k in ("timeout", "poll_interval", "max_endpoints_per_account")},
                     durations=("timeout", "poll_interval"), endpoints=tuple(endpoints),
                     allow_networks=tuple(networks), allow_http=allow_http,
                     encryption_key_env=key_env, encryption_key=key)
