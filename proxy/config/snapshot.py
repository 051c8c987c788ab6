"""The live configuration: frozen value objects, built once per (re)load.

A handler reads `ConfigHolder.current` once and keeps that `Snapshot` to the end
of the request, so no request ever sees half of a reload. Nothing here changes
after construction; mutable run-time state (health, buckets, balancer cursors)
lives elsewhere and is keyed by names from the snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from ..cache.settings import NO_CACHE, CacheSettings, PlanCache

WILDCARD = "*"


# aiohttp's own body cap is fixed when the app starts, so it is set to this
# ceiling and the live `max_body_bytes` is enforced by proxy/bodies.py instead.
MAX_BODY_CEILING = 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerTimeouts:
    """Client-side connection timeouts, in seconds; the defaults are nginx's
    client_header_timeout, client_body_timeout and keepalive_timeout."""

    header: float = 60.0  # from the connection (or a request's first byte) to its last header byte
    body: float = 60.0  # longest silence between two reads of a request body
    keepalive: float = 75.0  # an idle kept-alive connection


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    # admin by default: the series name every model, upstream and traffic level,
    # which is nobody's business on a gateway bound to a public address.
    access: str = "admin"  # open | admin | listener
    listen_host: str = "127.0.0.1"
    listen_port: int = 9464


@dataclass(frozen=True, slots=True)
class CorsSettings:
    """Browser access from other origins (server.cors); absent = off, no CORS header is sent."""

    allow_origins: tuple[str, ...] = ()  # exact origins, or "*" for any
    allow_methods: tuple[str, ...] = ("GET", "POST", "PATCH", "DELETE", "OPTIONS")
    # "*": whatever the preflight asks for, which covers Authorization (a literal
    # "*" in the answer would not) and the SDKs' x-stainless-* headers.
    allow_headers: tuple[str, ...] = ("*",)
    expose_headers: tuple[str, ...] = (
        "x-request-id", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens", "retry-after", "retry-after-ms")
    max_age: int = 600  # seconds a browser may cache a preflight answer


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024
    # The whole non-stream answer is held in memory before it is relayed; this bounds it.
    max_upstream_body_bytes: int = 256 * 1024 * 1024
    log_level: str = "info"
    access_log: bool = True
    log_format: str = "text"  # text | json (proxy/observability/logs.py)
    tracing: bool = False  # OpenTelemetry; OTEL_* variables can turn it on too (observability/tracing.py)
    # Base URL the dashboard/CORS checks treat as same-origin; None = the Host header.
    public_url: str | None = None
    # Networks (ipaddress objects) whose X-Forwarded-For is believed; empty = none is.
    trusted_proxies: tuple = ()
    # Content-Encodings a request body may use; none by default, since inflating
    # is work an unauthenticated client can demand.
    request_encodings: tuple[str, ...] = ()
    timeouts: ServerTimeouts = ServerTimeouts()
    metrics: MetricsSettings = MetricsSettings()
    cors: CorsSettings | None = None
    # The region this gateway runs in; its upstreams (and untagged ones) are preferred.
    region: str | None = None


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    path: str = "data/bluesminds.db"
    # postgresql://user@host:port/db puts the store on PostgreSQL; `path` then only names
    # the local usage spill files. None (or sqlite:///path) keeps SQLite at `path`.
    url: str | None = None
    flush_interval: float = 0.25
    flush_rows: int = 500
    queue_size: int = 100_000


@dataclass(frozen=True, slots=True)
class AdminSettings:
    key_env: str | None = None
    # Resolved from the environment at load time; never logged or echoed.
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    # open | invite | closed. Invite by default: an open gateway lets anyone who
    # reaches the port spend the operator's upstream keys.
    signup: str = "invite"
    default_plan: str = "free"
    bcrypt_rounds: int = 12
    password_min_length: int = 10
    session_ttl: float = 7 * 86400.0
    secure_cookies: bool = False
    key_cache_size: int = 100_000
    max_rotation_overlap: float = 86400.0
    login_attempts_per_minute: int = 10
    signups_per_hour: int = 10  # per client address
    key_failures_per_minute: int = 20  # failed API key checks, per lookup id and per address
    key_check_queue: int = 16  # new API keys waiting for bcrypt beyond this answer 429


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    first_byte: float = 120.0  # until response headers arrive
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    url: str  # without trailing slash; the OpenAI path (/v1/...) is appended
    weight: int = 1
    priority: int = 1
    models: tuple[str, ...] = (WILDCARD,)
    region: str | None = None
    timeouts: Timeouts = Timeouts()
    max_concurrent: int | None = None
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)
    enabled: bool = True
    drain: bool = False  # no new requests; in-flight ones finish
    source: str = ""  # file that declared it; the managed file for API-added servers

    def serves(self, model: str) -> bool:
        return WILDCARD in self.models or model in self.models

    @property
    def admits_new_requests(self) -> bool:
        return self.enabled and not self.drain


@dataclass(frozen=True, slots=True)
class Pricing:
    """Integer nano-dollars per one million tokens (YAML writes USD per 1M; see billing/money.py)."""

    input_nano: int = 0
    output_nano: int = 0
    cached_input_nano: int | None = None

    def cost_nano(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """The request's exact cost, rounded once (half-up) to a whole nano-dollar."""
        cached = min(cached_tokens, prompt_tokens)
        cached_rate = self.input_nano if self.cached_input_nano is None else self.cached_input_nano
        per_million = ((prompt_tokens - cached) * self.input_nano + cached * cached_rate
                       + completion_tokens * self.output_nano)
        return (per_million + 500_000) // 1_000_000

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD, derived from `cost_nano`: what the limiter's estimate interface takes."""
        return self.cost_nano(prompt_tokens, completion_tokens, cached_tokens) / 1_000_000_000


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    upstream_model: str  # name sent upstream (LiteLLM model_name)
    aliases: tuple[str, ...] = ()
    pricing: Pricing | None = None
    fallbacks: tuple[str, ...] = ()
    owned_by: str = "bluesminds"
    created: int = 1_700_000_000
    kind: str = "chat"  # chat | completion | embedding — informational
    # Prompt tokens the model accepts; a longer estimated prompt skips it in a fallback chain.
    context_window: int | None = None


@dataclass(frozen=True, slots=True)
class PlanPrice:
    """What a plan costs: a monthly fee, what it includes, and the overage."""

    monthly_fee_nano: int = 0
    included_tokens: int = 0  # per month; tokens beyond it are billed at the overage prices
    # (model, Pricing) pairs: overage per 1M tokens; a model left out is billed at its own price.
    overage: tuple[tuple[str, Pricing], ...] = ()
    creem_product_id: str | None = None  # set: the plan can be bought through Creem

    def pricing_for(self, model: "ModelConfig") -> Pricing | None:
        for name, pricing in self.overage:
            if name == model.name:
                return pricing
        return model.pricing


@dataclass(frozen=True, slots=True)
class PlanConfig:
    name: str
    rpm: int | None = None
    tpm: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    requests_per_month: int | None = None
    tokens_per_month: int | None = None
    monthly_budget_usd: float | None = None
    models: tuple[str, ...] = (WILDCARD,)
    max_concurrent: int | None = None
    default_max_tokens: int = 1024
    price: PlanPrice = PlanPrice()
    per_user: bool = False  # rpm/tpm buckets shared by all of a user's keys
    cache: PlanCache = NO_CACHE  # the response cache (proxy/cache/): off unless the plan enables it

    def allows_model(self, model: str) -> bool:
        return WILDCARD in self.models or model in self.models


@dataclass(frozen=True, slots=True)
class SplitArm:
    model: str  # canonical model name
    weight: int


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """One named rule: conditions (all must hold) and what to do with a request that meets them.

    A rule that only names `model` and pins upstreams or regions is the older
    form and behaves as it did: it restricts where models matching the glob go.
    """

    name: str = ""
    model: str = WILDCARD  # fnmatch glob on the requested name or its canonical model
    plans: tuple[str, ...] = ()  # any of these plans; empty = any plan
    key_tags: tuple[str, ...] = ()  # the key carries every one of these tags
    metadata: tuple[tuple[str, str], ...] = ()  # body `metadata` key == value, each of them
    tags: tuple[str, ...] = ()  # every one is in x-bluesminds-tags or a body metadata value
    headers: tuple[tuple[str, str], ...] = ()  # lower-cased header name, fnmatch glob on its value
    rewrite: str | None = None  # canonical model served instead of the requested one
    split: tuple[SplitArm, ...] = ()  # weighted A/B choice of the model, instead of rewrite
    fallbacks: tuple[str, ...] | None = None  # None: the model's own `fallbacks`
    upstreams: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()

    @property
    def conditional(self) -> bool:
        """Conditions beyond the model glob: only the request can tell whether it matches."""
        return bool(self.plans or self.key_tags or self.metadata or self.tags or self.headers)

    @property
    def pins(self) -> bool:
        return bool(self.upstreams or self.regions)


@dataclass(frozen=True, slots=True)
class HealthSettings:
    path: str = "/health/liveliness"
    interval: float = 10.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    eject_after: int = 3  # consecutive request failures before passive ejection
    cooldown: float = 5.0
    max_cooldown: float = 120.0


@dataclass(frozen=True, slots=True)
class RetrySettings:
    attempts: int = 3  # total tries per request, first included
    backoff: float = 0.025
    max_backoff: float = 1.0
    budget_ratio: float = 0.2  # retries in flight ≤ ratio × active requests…
    min_retries: int = 5  # …but always allow this many, so the requests in flight on an upstream that dies can all move
    per_model: int | None = None  # tries on one model of a fallback chain before the next; None = attempts
    deadline: float | None = None  # seconds for the whole request, every attempt and model included


@dataclass(frozen=True, slots=True)
class WebhookEndpointConfig:
    """A system-wide endpoint from YAML; its secret comes from the environment."""

    name: str
    url: str
    events: tuple[str, ...]
    secret_env: str
    secret: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    endpoints: tuple[WebhookEndpointConfig, ...] = ()
    allow_networks: tuple = ()  # ipaddress networks webhooks may reach although not public
    allow_http: bool = False
    encryption_key_env: str | None = None
    encryption_key: bytes | None = field(default=None, repr=False)  # 32 bytes, from the environment
    timeout: float = 15.0
    poll_interval: float = 0.25  # how often the outbox is read for due deliveries
    max_endpoints_per_account: int = 20


@dataclass(frozen=True, slots=True)
class CreemSettings:
    base_url: str = "https://api.creem.io"
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)
    # None: the webhook route is off (404); there is no mode that skips the signature.
    webhook_secret_env: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    success_url: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class BillingSettings:
    currency: str = "USD"
    invoice_grace: float = 3 * 86400.0  # a month's invoice stays draft this long after the month ends
    invoice_prefix: str = "BM-"
    invoice_every: float = 3600.0  # how often the in-process job generates and finalizes
    referral_reward_tokens: int = 0  # bonus included tokens for both accounts, once per referred account
    creem: CreemSettings = CreemSettings()


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    # "memory" (one process) or "redis://host:port/db" (shared by every worker and machine).
    backend: str = "memory"
    # A reservation's deadline, renewed while its request lives: a killed
    # worker's holds are gone this long after it died.
    hold_ttl: float = 30.0

    @property
    def shared(self) -> bool:
        return self.backend != "memory"


def _capture_defaults() -> "CaptureSettings":
    # Imported here: the capture package imports the config, not the other way round.
    from ..capture.settings import CaptureSettings
    return CaptureSettings()


@dataclass(frozen=True, slots=True)
class Snapshot:
    server: ServerSettings
    database: DatabaseSettings
    admin: AdminSettings
    auth: AuthSettings
    health: HealthSettings
    retry: RetrySettings
    upstreams: tuple[UpstreamConfig, ...]
    models: Mapping[str, ModelConfig]  # canonical name -> model
    plans: Mapping[str, PlanConfig]
    routing: tuple[RoutingRule, ...] = ()
    billing: BillingSettings = BillingSettings()
    limits: LimitsSettings = LimitsSettings()
    # Derived indexes, filled by the builder.
    model_lookup: Mapping[str, ModelConfig] = field(default_factory=dict)  # name or alias
    upstream_by_name: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    digest: str = ""
    files: tuple[str, ...] = ()
    managed_file: str | None = None
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    capture: "CaptureSettings" = field(default_factory=_capture_defaults)
    cache: CacheSettings = CacheSettings()

    def __post_init__(self) -> None:
        # Shared by every request in flight: a frozen dataclass holding a plain
        # dict could still be changed under them, so the mappings are read-only views.
        for name in ("models", "plans", "model_lookup", "upstream_by_name"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    def resolve_model(self, name: str) -> ModelConfig | None:
        return self.model_lookup.get(name)
