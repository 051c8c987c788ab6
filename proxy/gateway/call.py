"""What one /v1 request carries from intake to accounting."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..config.snapshot import ModelConfig, PlanConfig, Snapshot
    from .families import Family
    from .intake import ParsedRequest


class Call:
    """The config snapshot is read once, at the top, and used to the end of the request."""

    __slots__ = ("app", "snapshot", "family", "request_id", "started", "parsed", "principal",
                 "model", "plan", "reservation", "rl_headers", "upstream", "ttfb", "accounted",
                 "prompt_estimate", "tokens", "tracer", "capture", "replay_of")

    def __init__(self, app: web.Application, snapshot: "Snapshot", family: "Family", request_id: str) -> None:
        self.app = app
        self.snapshot = snapshot
        self.family = family
        self.request_id = request_id
        self.started = time.perf_counter()  # for durations only; stamps come from app[CLOCK]
        self.parsed: ParsedRequest | None = None
        self.principal = None
        self.model: ModelConfig | None = None
        self.plan: PlanConfig | None = None
        self.reservation = None
        self.rl_headers: dict[str, str] = {}
        self.upstream: str | None = None
        self.ttfb: float | None = None
        self.accounted = False
        self.prompt_estimate = 0  # counted once at admission; reused when upstream reports no usage
        self.tokens: tuple[int, int] | None = None  # (prompt, completion) as accounted
        self.tracer = None  # proxy/observability/tracing.py; None while traces are off
        self.capture = None  # proxy/capture/draft.py Draft, when this request's bodies are captured
        self.replay_of: int | None = None  # the usage row this request replays

    @property
    def route(self) -> str:
        return self.family.name

    def mark_first_byte(self) -> None:
        self.ttfb = time.perf_counter() - self.started
