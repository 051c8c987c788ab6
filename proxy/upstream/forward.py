"""Send a request to an upstream, failing over until one answers or the bounds run out.

Retried, on another upstream: connect errors, timeouts before the response
starts, 5xx and 429, a 2xx that is not what the family promises (HTML, 204,
a redirect, a stream that is not SSE), and (for streams) a connection that
drops before the first body byte. Not retried: anything once bytes reached
the client, upstream 4xx, which are the client's own mistakes and are passed
through, and an answer over the size cap, which every upstream would repeat.
Retries are bounded by `retry.attempts` per request and by the shared retry
budget, with one exception: a connection that failed before any response byte
arrived is moved on even past those bounds, since an upstream dying under load
fails exactly that way for every request it held, and such a failure cost the
upstreams nothing. Each such move goes to an upstream not yet tried, so there
are at most as many as there are upstreams (a whole region dying needs one per
upstream it had).

Each attempt's effect on the upstream's health is settled by one `Attempt`
object, whether the answer is read here (non-stream) or relayed later (stream).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from ..appkeys import FORWARDER  # noqa: F401  (importable from here as before)
from ..config.snapshot import ModelConfig, Snapshot, Timeouts, UpstreamConfig
from ..errors import (GatewayError, InvalidRequest, NoHealthyUpstream, UpstreamBadResponse, UpstreamClientError,
                      UpstreamError, UpstreamModelRefused, UpstreamResponseTooLarge, UpstreamTimeout)
from ..routing.balancer import Balancer
from ..routing.health import HealthMonitor
from ..routing.retry import RetryBudget, backoff_delay
from ..routing.rules import Router, Step
from .http1 import ConnectionPool, Response, header_lines
from .transport import ResponseTooLarge

if TYPE_CHECKING:
    from ..gateway.families import Family
    from ..gateway.intake import ParsedRequest

log = logging.getLogger("bluesminds.upstream")

# An error body is only read for its message; a hostile or broken upstream
# must not make the gateway buffer megabytes to learn it.
ERROR_BODY_LIMIT = 64 * 1024
# How many upstreams a 503 names, so the message stays one readable line.
REASONS_SHOWN = 4


class Attempt:
    """One request's claim on one upstream, settled exactly once."""

    __slots__ = ("health", "name", "trial", "started", "_open")

    def __init__(self, health: HealthMonitor, name: str) -> None:
        self.health = health
        self.name = name
        self.started = time.monotonic()
        self.trial = health.started(name)
        self._open = True

    def succeeded(self) -> None:
        if self._open:
            self._open = False
            self.health.finished(self.name, self.trial)
            self.health.success(self.name, time.monotonic() - self.started)

    def failed(self, reason: str) -> None:
        """`reason` counts against the upstream; an empty one only ends the claim."""
        if self._open:
            self._open = False
            self.health.finished(self.name, self.trial)
            if reason:
                self.health.failure(self.name, reason)

    def ended(self) -> None:
        self.failed("")


@dataclass(slots=True)
class UpstreamReply:
    """A 2xx answer from one upstream. For streams, `response` is still open."""

    upstream: UpstreamConfig
    model: ModelConfig
    status: int
    attempt: Attempt
    body: bytes = b""  # non-stream answers
    response: Response | None = None  # stream answers
    first_chunk: bytes = b""
    attempts: int = 1
    content_type: str = "application/json"  # a non-stream answer's, as the upstream labelled it
    deadline: float | None = None  # the request's deadline (monotonic), which a stream's relay keeps too

    @property
    def started(self) -> float:
        return self.attempt.started

    def close(self, *, ok: bool, reason: str = "") -> None:
        """End a stream: return or drop its connection and settle the upstream's health."""
        if self.response is not None:
            if ok:
                self.response.release()
            else:
                self.response.close()  # never pool a connection in an unknown state
        if ok:
            self.attempt.succeeded()
        else:
            self.attempt.failed(reason)


def client_error(status: int, body: bytes, upstream: str) -> UpstreamClientError:
    """An upstream's 4xx as an error in OpenAI's shape, its own fields kept when it sent them."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        code = err.get("code")
        return UpstreamClientError(
            status, err["message"], type=str(err.get("type") or "invalid_request_error"),
            code=None if code is None else str(code),
            param=err.get("param") if isinstance(err.get("param"), str) else None, upstream=upstream)
    text = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    return UpstreamClientError(status, f"The upstream rejected the request: {text}",
                               type="invalid_request_error", code=None, param=None, upstream=upstream)


# LiteLLM: 400 "Invalid model name passed in model=x", or 404 "model x not found" / "does not exist".
_REFUSED_MODEL = re.compile(r"invalid model name|model\b.{0,200}\b(not found|does not exist)", re.IGNORECASE | re.DOTALL)


def refuses_model(status: int, error: UpstreamClientError) -> bool:
    """An upstream 400/404 that says it does not serve the model it was sent."""
    if status not in (400, 404):
        return False
    return error.code == "model_not_found" or bool(_REFUSED_MODEL.search(error.message))


def context_too_long(error: UpstreamClientError) -> bool:
    """An upstream 400 saying the prompt does not fit the model: the next model of a chain may take it."""
    return error.status == 400 and (error.code == "context_length_exceeded"
                                    or "context_length_exceeded" in error.message
                                    or "maximum context length" in error.message.lower())


class _Moveable(Exception):
    """Marks a failure that happened before any response byte: always safe to try elsewhere once."""


class Forwarder:
    def __init__(self, pool: ConnectionPool, balancer: Balancer, health: HealthMonitor,
                 budget: RetryBudget, *, tracer=None) -> None:
        self.tracer = tracer  # proxy/observability/tracing.py; None: traces are off
        self.balancer = balancer
        self.health = health
        self.budget = budget
        self.pool = pool
        self.router = Router()  # rules and the A/B split's random source, which tests may seed
        self._header_cache: dict[tuple, bytes] = {}

    def _static_headers(self, upstream: UpstreamConfig) -> bytes:
        """Header lines that are the same for every request to `upstream`, built once."""
        key = (upstream.url, upstream.api_key)
        lines = self._header_cache.get(key)
        if lines is None:
            lines = self._header_cache[key] = b"Content-Type: application/json\r\n" + self._auth_headers(upstream)
        return lines

    @staticmethod
    def _auth_headers(upstream: UpstreamConfig) -> bytes:
        pairs = [("Accept", "application/json, text/event-stream")]
        if upstream.api_key:
            pairs.append(("Authorization", f"Bearer {upstream.api_key}"))
        return header_lines(pairs)

    def _headers_for(self, upstream: UpstreamConfig, body) -> bytes:
        if isinstance(body, bytes):
            return self._static_headers(upstream)
        # A streamed upload carries its own type (a multipart boundary per request): never cached.
        return header_lines([("Content-Type", body.content_type.replace("\r", "").replace("\n", ""))]) + \
            self._auth_headers(upstream)

    async def send(self, snapshot: Snapshot, model: ModelConfig, parsed: "ParsedRequest",
                   request_id: str, family: "Family", *, chain: "tuple[Step, ...] | None" = None,
                   prompt_tokens: int = 0) -> UpstreamReply:
        """Try the chain's models in order, each on its upstreams, within the request's bounds:
        `retry.attempts` in all, `retry.per_model` on one model, one `retry.deadline`."""
        settings = snapshot.retry
        if chain is None:
            chain = self.router.route(snapshot, model, None).chain
        per_model = settings.per_model or settings.attempts
        deadline = None if settings.deadline is None else time.monotonic() + settings.deadline
        failed: list[str] = []  # upstreams that failed: not asked again for any model of the chain
        attempt = 0
        last_error: GatewayError | None = None
        last_moveable = False
        retrying = False
        too_long: list[str] = []
        self.budget.active_requests += 1
        try:
            for step in chain:
                candidate = step.model
                window = candidate.context_window
                if window is not None and prompt_tokens > window:
                    # Decided here, from admission's estimate: no upstream is asked for a certain refusal.
                    too_long.append(f"{candidate.name}: {window}")
                    log.info("skipping %s for request %s: about %d prompt tokens exceed its context window of %d",
                             candidate.name, request_id, prompt_tokens, window)
                    continue
                body = family.upstream_body(parsed, candidate.upstream_model)
                asked: list[str] = []
                while True:
                    free_move = last_moveable
                    if (attempt >= settings.attempts or len(asked) >= per_model) and not free_move:
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        raise self._deadline_passed(settings, attempt, last_error)
                    upstream = self.balancer.pick(snapshot, candidate, exclude=failed + asked, step=step)
                    if upstream is None:
                        break
                    if attempt > 0:
                        if attempt >= settings.attempts or (not retrying and not self.budget.allows(settings)):
                            # Beyond the bounds only a free move goes on, without backoff: the
                            # upstream that failed never saw the request.
                            if not free_move:
                                raise last_error  # type: ignore[misc]
                        else:
                            if not retrying:
                                self.budget.active_retries += 1
                                retrying = True
                            await asyncio.sleep(backoff_delay(settings, attempt - 1))
                    attempt += 1
                    asked.append(upstream.name)
                    try:
                        result = await self._attempt(upstream, candidate, family.upstream_path, body,
                                                     parsed.stream, request_id, family, until=deadline)
                        last_moveable = False
                    except _Moveable as exc:
                        result = exc.args[0]
                        last_moveable = True
                    if isinstance(result, UpstreamReply):
                        result.attempts = attempt
                        result.deadline = deadline
                        return result
                    if isinstance(result, UpstreamClientError) and context_too_long(result):
                        last_error = result
                        break  # this model's window, not the upstream: the next model may take it
                    if isinstance(result, (UpstreamClientError, UpstreamResponseTooLarge)):
                        raise result  # another upstream would say the same
                    if not isinstance(result, UpstreamModelRefused):
                        failed.append(upstream.name)
                    last_error = result
            if last_error is not None:
                raise last_error
            if too_long:
                raise InvalidRequest(
                    f"The prompt (about {prompt_tokens} tokens) is longer than the context window of every model "
                    f"that could serve it ({'; '.join(too_long)}). Shorten it.", param="messages",
                    code="context_length_exceeded")
            first = chain[0]
            if self.balancer.all_saturated(snapshot, first.model, first):
                self.health.saturated(first.model.name, self.health.now())
                raise NoHealthyUpstream(
                    f"Every upstream serving `{first.model.name}` is at its concurrency limit. Retry shortly.",
                    code="upstreams_saturated", headers={"Retry-After": "1", "retry-after-ms": "1000"})
            raise NoHealthyUpstream(
                f"No healthy upstream can serve `{first.model.name}` right now "
                f"({self._why_unavailable(snapshot, first.model, first)}). Retry shortly.",
                headers={"Retry-After": "1", "retry-after-ms": "1000"})
        finally:
            self.budget.active_requests -= 1
            if retrying:
                self.budget.active_retries -= 1

    @staticmethod
    def _deadline_passed(settings, attempts: int, last: GatewayError | None) -> UpstreamTimeout:
        why = f"; the last attempt failed: {last.message}" if last is not None else ""
        return UpstreamTimeout(f"The request's deadline of {settings.deadline:g}s passed after {attempts} "
                               f"attempt{'s' if attempts != 1 else ''}{why}", code="deadline_exceeded")

    def _why_unavailable(self, snapshot: Snapshot, model: ModelConfig, step: "Step | None" = None) -> str:
        """Each upstream's name and last failure, never its URL: tenants read this."""
        reasons = []
        for tier in self.balancer.tiers(snapshot, model, step):
            for upstream in tier:
                if not upstream.enabled:
                    reason = "disabled"
                elif upstream.drain:
                    reason = "draining"
                else:
                    reason = self.health.reason(upstream.name) or "unavailable"
                reasons.append(f"{upstream.name}: {reason}")
        if not reasons:
            return "no upstream is configured to serve it"
        if len(reasons) > REASONS_SHOWN:
            reasons[REASONS_SHOWN:] = [f"and {len(reasons) - REASONS_SHOWN} more"]
        return "; ".join(reasons)

    async def send_to(self, upstream: UpstreamConfig, model: ModelConfig, path: bytes, body: bytes, *,
                      stream: bool, request_id: str, family: "Family", method: bytes = b"POST",
                      holds: str = "this object") -> UpstreamReply:
        """One attempt on exactly `upstream`, which holds state no other upstream has
        (a stored response): never failed over, never retried elsewhere."""
        why = None
        if not upstream.enabled:
            why = "disabled"
        elif not self.health.alive(upstream.name, self.health.now()):
            why = self.health.reason(upstream.name) or "unavailable"
        # A draining upstream still answers for what it holds: draining only stops new work.
        if why is not None:
            raise NoHealthyUpstream(
                f"The upstream that holds {holds} ({upstream.name}) is unavailable right now ({why}); "
                "no other upstream has it. Retry shortly.", code="pinned_upstream_unavailable",
                headers={"Retry-After": "1", "retry-after-ms": "1000"})
        try:
            result = await self._attempt(upstream, model, path, body, stream, request_id, family, method=method)
        except _Moveable as exc:
            result = exc.args[0]
        if isinstance(result, UpstreamReply):
            return result
        raise result

    async def _attempt(self, upstream: UpstreamConfig, model: ModelConfig, path: bytes, body: bytes,
                       stream: bool, request_id: str, family: "Family",
                       method: bytes = b"POST", until: float | None = None, *,
                       trace_headers: bytes | None = None) -> UpstreamReply | GatewayError:
        if trace_headers is None and self.tracer is not None:
            return await self.tracer.attempt(self._attempt, upstream, model, path, body, stream, request_id,
                                             family, method, until)
        t = upstream.timeouts
        if until is not None:
            # The request's own deadline (monotonic) shortens every wait of this attempt.
            left = max(0.001, until - time.monotonic())
            t = Timeouts(connect=min(t.connect, left), first_byte=min(t.first_byte, left), total=min(t.total, left))
        deadline = asyncio.get_running_loop().time() + t.total  # the whole answer, in loop time
        name = upstream.name
        claim = Attempt(self.health, name)
        response = None
        handed_over = False  # an open stream now belongs to the UpstreamReply
        try:
            headers = self._headers_for(upstream, body) + b"x-request-id: " + request_id.encode() + b"\r\n"
            if trace_headers:
                headers += trace_headers
            try:
                response = await self.pool.request(self.pool.target(upstream.url), path, headers, body,
                                                   connect_timeout=t.connect, read_timeout=t.first_byte,
                                                   method=method)
            except asyncio.TimeoutError:
                raise  # a TimeoutError is an OSError too, but the upstream may be working on it
            except OSError as exc:
                raise _Moveable(self._failed(claim, type(exc).__name__, UpstreamError(
                    "Could not reach an upstream server for this model.", code="upstream_unreachable")))
            status = response.status
            if status >= 500 or status == 429:
                await response.read_bounded(ERROR_BODY_LIMIT, t.first_byte)
                return self._failed(claim, f"upstream answered {status}", UpstreamError(
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
                    return self._failed(claim, f"upstream answered {status}", UpstreamError(
                        "The upstream rejected the gateway's credentials; the operator must fix "
                        "the upstream key.", code="upstream_auth_failed"))
                claim.ended()
                error = client_error(status, raw, name)
                if refuses_model(status, error):
                    # The upstream does not know the name the gateway sent: the operator's
                    # mapping is wrong, not the tenant's request. Another upstream may know it.
                    log.error("upstream %s refused model %r (sent for `%s`): %s", name, model.upstream_model,
                              model.name, error.message)
                    return UpstreamModelRefused(model.name, name)
                return error
            if status < 200 or status >= 300:
                return self._bad(claim, response, f"upstream answered {status}")
            if not stream:
                try:
                    data = await response.read(t.first_byte, deadline=deadline)
                except ResponseTooLarge as exc:
                    raise UpstreamResponseTooLarge(
                        f"The upstream's answer is larger than the gateway's limit of {exc.limit} bytes.") from None
                if not family.accepts_answer(response.content_type, data):
                    return self._bad(claim, response, "upstream answered 200 with a body that is not JSON")
                claim.succeeded()
                return UpstreamReply(upstream, model, status, claim, body=data, content_type=response.content_type)
            framing = family.framing
            if not framing.accepts_content_type(response.content_type):
                return self._bad(claim, response, "upstream answered a stream that is not an event stream")
            first = await response.readany(t.first_byte)
            if not first:
                return self._failed(claim, "stream closed before the first byte", UpstreamError(
                    "The upstream closed the stream before sending anything."))
            if not framing.opens_validly(first):
                return self._bad(claim, response, "upstream answered a stream that does not start with an event")
            handed_over = True
            return UpstreamReply(upstream, model, status, claim, response=response, first_chunk=first)
        except UpstreamResponseTooLarge as exc:
            if response is not None:
                response.close()
            claim.ended()  # the upstream did its job; the gateway's limit said no
            log.warning("upstream %s answered more than %s bytes", name, self.pool.max_body)
            return exc
        except asyncio.TimeoutError:
            return self._failed(claim, "timeout", UpstreamTimeout(
                f"The upstream did not answer within {t.first_byte:g}s."))
        except OSError as exc:
            return self._failed(claim, type(exc).__name__, UpstreamError(
                "Could not reach an upstream server for this model.", code="upstream_unreachable"))
        finally:
            if not handed_over:
                if response is not None:
                    # Pooled again only when read to the end; cancelled or failed mid-body: dropped.
                    response.release()
                claim.ended()

    def _bad(self, claim: Attempt, response: Response, reason: str) -> GatewayError:
        response.close()  # whatever it is, the rest of it must not reach the next request
        return self._failed(claim, reason, UpstreamBadResponse(
            "The upstream answered with something that is not an OpenAI-compatible response."))

    def _failed(self, claim: Attempt, reason: str, error: GatewayError) -> GatewayError:
        claim.failed(reason)
        log.info("upstream attempt failed: %s (%s)", claim.name, reason)
        return error
