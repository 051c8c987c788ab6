"""The fake upstream's settings (fixed at creation) and counters (live)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .faults import Fault


@dataclass(frozen=True, slots=True)
class _Config:
    """Per-app settings plus everything the hot path can reuse verbatim."""

    name: str
    latency: float
    chunk_delay: float
    stream_chunks: int
    auth: str | None  # the exact Authorization header expected, if any
    id_prefix: str
    pieces: tuple[str, ...]
    full_content: str
    chat_role: bytes  # serialized `choices[0]` objects for stream chunks
    chat_pieces: tuple[bytes, ...]
    chat_finish: dict[str, bytes]
    text_pieces: tuple[bytes, ...]
    text_finish: dict[str, bytes]
    models_body: bytes


@dataclass(slots=True)
class _State:
    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    open_streams: int = 0
    cancelled: int = 0
    health_checks: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    last_body: Any = None
    fault: Fault | None = None
    ids: Iterator[int] = field(default_factory=itertools.count)  # response id suffixes

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "in_flight": self.in_flight,
            "open_streams": self.open_streams,
            "cancelled": self.cancelled,
            "health_checks": self.health_checks,
            "last_headers": dict(self.last_headers),
            "last_body": self.last_body,
            "fault": self.fault.as_dict() if self.fault else None,
        }

    def reset(self) -> None:
        self.requests = self.cancelled = self.health_checks = 0
        self.by_path = {}
        self.last_headers = {}
        self.last_body = None

    def take_fault(self, *, health: bool) -> Fault | None:
        """The fault this request must suffer, consuming one from its count."""
        fault = self.fault
        if fault is None or (health and not fault.health):
            return None
        if fault.remaining is not None:
            if fault.remaining <= 0:
                return None
            fault.remaining -= 1
        return fault


CONFIG_KEY = web.AppKey("fake_upstream_config", _Config)
STATE_KEY = web.AppKey("fake_upstream_state", _State)
