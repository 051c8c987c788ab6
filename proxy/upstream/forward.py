"""Send a request to an upstream, failing over until one answers or the bounds run out.

Retried, on another upstream: connect errors, timeouts before the response
starts, 5xx and 429, and (for streams) a connection that drops before the first
body byte. Not retried: anything once bytes reached the client, and upstream
4xx, which are the client's own mistakes and are passed through. Retries are
bounded by `retry.attempts` per request and by the shared retry budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from ..config.snapshot import ModelConfig, Snapshot, UpstreamConfig
from ..errors import GatewayError, NoHealthyUpstream, UpstreamError, UpstreamTimeout
from ..routing.balancer import Balancer
from ..routing.health import HealthMonitor
from ..routing.retry import RetryBudget, backoff_delay
from .http1 import ConnectionPool, Response, header_lines
from .transport import ResponseTooLarge
from .request import UPSTREAM_PATH, ParsedRequest, upstream_body

log = logging.getLogger("bluesminds.upstream")

FORWARDER: web.AppKey["Forwarder"] = web.AppKey("forwarder", object)

# An error answer is a message, not a payload: what is relayed or logged of it needs no more.
ERROR_BODY_LIMIT = 64 * 1024

UPSTREAM_PATH_BYTES = {route: path.encode() for route, path in UPSTREAM_PATH.items()}


@dataclass(slots=True)
class UpstreamReply:
    """A 2xx answer from one upstream. For streams, `response` is still open."""

    upstream: UpstreamConfig
    model: ModelConfig
    status: int
    body: bytes = b""  # non-stream answers
    response: Response | None = None  # stream answers
    first_chunk: bytes = b""
    attempts: int = 1
    started: float = 0.0
    trial: bool = False  # this request is the one probing an upstream on probation
    _finished: bool = field(default=False)

    def close(self, health: HealthMonitor, *, ok: bool, reason: str = "") -> None:
        """End a stream: return or drop its connection and settle the upstream's health."""
        if self._finished or self.response is None:
            return
        self._finished = True
        if ok:
            self.response.release()
        else:
            self.response.close()  # never pool a connection in an unknown state
        health.finished(self.upstream.name, self.trial)
        if ok:
            health.success(self.upstream.name, time.monotonic() - self.started)
        elif reason:
            health.failure(self.upstream.name, reason)


class UpstreamClientError(GatewayError):
    """An upstream's 4xx answer, passed to the client as it came (OpenAI-shaped)."""

    def __init__(self, status: int, body: bytes, upstream: str) -> None:
        self.status = status
        self.raw = body
        self.upstream = upstream
        message, type_, code, param = _error_fields(body, status)
        super().__init__(message, type=type_, code=code, param=param)


def _error_fields(body: bytes, status: int) -> tuple[str, str, str | None, str | None]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        code = err.get("code")
        return (err["message"], str(err.get("type") or "invalid_request_error"),
                None if code is None else str(code),
                err.get("param") if isinstance(err.get("param"), str) else None)
    text = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    return f"The upstream rejected the request: {text}", "invalid_request_error", None, None


class Forwarder:
    def __init__(self, pool: ConnectionPool, balancer: Balancer, health: HealthMonitor,
                 budget: RetryBudget) -> None:
        self.balancer = balancer
        self.health = health
        self.budget = budget
        self.pool = pool
        self._header_cache: dict[tuple, bytes] = {}

    def _static_headers(self, upstream: UpstreamConfig) -> bytes:
        """Header lines that are the same for every request to `upstream`, built once."""
        key = (upstream.url, upstream.api_key)
        lines = self._header_cache.get(key)
        if lines is None:
            pairs = [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")]
            if upstream.api_key:
                pairs.append(("Authorization", f"Bearer {upstream.api_key}"))
            lines = self._header_cache[key] = header_lines(pairs)
        return lines

    async def send(self, snapshot: Snapshot, model: ModelConfig, parsed: ParsedRequest,
                   request_id: str) -> UpstreamReply:
        settings = snapshot.retry
        candidates = [model] + [snapshot.model_lookup[f] for f in model.fallbacks if f in snapshot.model_lookup]
        tried: list[str] = []
        attempt = 0
        last_error: GatewayError | None = None
        retrying = False
        self.budget.active_requests += 1
        try:
            for candidate in candidates:
                body = upstream_body(parsed, candidate.upstream_model)
                path = UPSTREAM_PATH_BYTES[parsed.route]
                while attempt < settings.attempts:
                    upstream = self.balancer.pick(snapshot, candidate, exclude=tried)
                    if upstream is None:
                        break
                    if attempt > 0:
                        if not retrying:
                            if not self.budget.allows(settings):
                                raise last_error  # type: ignore[misc]
                            self.budget.active_retries += 1
                            retrying = True
                        await asyncio.sleep(backoff_delay(settings, attempt - 1))
                    attempt += 1
                    tried.append(upstream.name)
                    result = await self._attempt(upstream, candidate, path, body, parsed.stream, request_id)
                    if isinstance(result, UpstreamReply):
                        result.attempts = attempt
                        return result
                    if isinstance(result, UpstreamClientError):
                        raise result  # the client's mistake: another upstream would say the same
                    last_error = result
            if last_error is not None:
                raise last_error
            if self.balancer.all_saturated(snapshot, model):
                self.health.saturated(model.name, self.health.now())
                raise NoHealthyUpstream(
                    f"Every upstream serving `{model.name}` is at its concurrency limit. Retry shortly.",
                    code="upstreams_saturated", headers={"Retry-After": "1", "retry-after-ms": "1000"})
            raise NoHealthyUpstream(
                f"No healthy upstream can serve `{model.name}` right now. Retry shortly.",
                headers={"Retry-After": "1", "retry-after-ms": "1000"})
        finally:
            self.budget.active_requests -= 1
            if retrying:
                self.budget.active_retries -= 1

    async def _attempt(self, upstream: UpstreamConfig, model: ModelConfig, path: bytes, body: bytes,
                       stream: bool, request_id: str) -> UpstreamReply | GatewayError:
        t = upstream.timeouts
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + t.total  # the whole answer, in loop time
        name = upstream.name
        trial = self.health.started(name)
        response = None
        handed_over = False  # an open stream now belongs to the UpstreamReply
        try:
            headers = self._static_headers(upstream) + b"x-request-id: " + request_id.encode() + b"\r\n"
            response = await self.pool.request(self.pool.target(upstream.url), path, headers, body,
                                               connect_timeout=t.connect, read_timeout=t.first_byte)
            status = response.status
            if status >= 500 or status == 429:
                await response.read_bounded(ERROR_BODY_LIMIT, t.first_byte)
                return self._failed(upstream, f"upstream answered {status}", UpstreamError(
                    "Every upstream for this model is rate limiting the gateway. Retry shortly."
                    if status == 429 else
                    f"The upstream server answered {status}; no other upstream could take the request.",
                    code="upstream_rate_limited" if status == 429 else "upstream_error"))
            if status >= 400:
                raw = await response.read_bounded(ERROR_BODY_LIMIT, t.first_byte)
                if status in (401, 403):
                    # The gateway's own credentials for this upstream are wrong: an
                    # operator problem, not the client's key.
                    log.error("upstream %s rejected the gateway's credentials (%d)", name, status)
                    return self._failed(upstream, f"upstream answered {status}", UpstreamError(
                        "The upstream rejected the gateway's credentials; the operator must fix "
                        "the upstream key.", code="upstream_auth_failed"))
                return UpstreamClientError(status, raw, name)
            if not stream:
                try:
                    data = await response.read(t.first_byte, deadline=deadline)
                except ResponseTooLarge as exc:
                    # The upstream is healthy and every other one would answer the same:
                    # neither blamed nor retried.
                    log.warning("upstream %s answer exceeds the body cap: %s", name, exc)
                    raise UpstreamError(
                        f"The upstream's answer is larger than the gateway relays ({exc.limit} bytes).",
                        code="upstream_response_too_large") from None
                self.health.success(name, time.monotonic() - started)
                return UpstreamReply(upstream, model, status, body=data, started=started)
            first = await response.readany(t.first_byte)
            if not first:
                return self._failed(upstream, "stream closed before the first byte", UpstreamError(
                    "The upstream closed the stream before sending anything."))
            handed_over = True
            return UpstreamReply(upstream, model, status, response=response,
                                 first_chunk=first, started=started, trial=trial)
        except asyncio.TimeoutError:
            return self._failed(upstream, "timeout", UpstreamTimeout(
                f"The upstream did not answer within {t.first_byte:g}s."))
        except OSError as exc:
            return self._failed(upstream, type(exc).__name__, UpstreamError(
                "Could not reach an upstream server for this model.", code="upstream_unreachable"))
        finally:
            if not handed_over:
                if response is not None:
                    # Pooled again only when read to the end; cancelled or failed mid-body: dropped.
                    response.release()
                self.health.finished(name, trial)

    def _failed(self, upstream: UpstreamConfig, reason: str, error: GatewayError) -> GatewayError:
        self.health.failure(upstream.name, reason)
        log.info("upstream attempt failed: %s (%s)", upstream.name, reason)
        return error
