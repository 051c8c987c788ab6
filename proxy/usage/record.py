"""One row of usage: what a single /v1 request cost and how it went."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter

@dataclass(slots=True)
class UsageRecord:
    ts: float  # unix seconds; the UTC day it falls on is the day it is billed to
    request_id: str
    user_id: int
    key_id: int | None  # None for a dashboard session or the admin key
    route: str  # "chat" | "completions" | "embeddings"
    requested_model: str  # as the client sent it (may be an alias)
    served_model: str  # canonical model that answered (after aliases and fallbacks)
    upstream: str | None  # None when the request never reached an upstream
    status: int
    error_type: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None = None
    estimated: bool = False  # tokens counted by the gateway, not reported by the upstream
    partial: bool = False  # stream cut or client left before the end
    cost_nano: int = 0  # integer nano-dollars (10⁻⁹ USD): exact, see proxy/billing/money.py
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    stream: bool = False
    reasoning_tokens: int | None = None  # part of completion_tokens, never billed twice
    replay_of: int | None = None  # the usage row a replay re-sent (POST /api/usage/logs/{id}/replay)
    # Redacted bodies (proxy/capture/record.py Captured), written beside the row in its
    # batch's transaction; not a column of `usage`.
    capture: object | None = None
    cache_hit: bool = False  # answered from the response cache: 0 upstream tokens, the per-hit price
    cost_saved_nano: int = 0  # a hit: what the answer cost when it was bought (not billed)

    @property
    def is_error(self) -> bool:
        return self.status >= 400

    def as_row(self) -> tuple:
        """Column values in `COLUMNS` order, for executemany."""
        return _row(self)


NOT_COLUMNS = frozenset({"capture"})
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(UsageRecord) if f.name not in NOT_COLUMNS)
# attrgetter over all fields: ~20x cheaper than dataclasses.astuple on the flush path.
_row = attrgetter(*COLUMNS)
