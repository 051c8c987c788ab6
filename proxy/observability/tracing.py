"""OpenTelemetry traces, optional: `pip install 'bluesminds[otel]'`.

On when `server.tracing: true`, or when the standard variables ask for it
(`OTEL_TRACES_EXPORTER=otlp`, or `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set); `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` keeps it off. Decided when the app is created:
a tracer provider and its exporter are process plumbing, not a reloadable
setting. The OTLP/HTTP exporter reads every other `OTEL_*` variable itself
(headers, timeout, compression); `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES` name the service (default `bluesminds`).

The span tree of one /v1 request:

    POST /v1/chat/completions        (server span; parent = the client's traceparent)
    ├── admission                    (auth, model, limits)
    ├── upstream attempt             (one per upstream tried; its traceparent is sent upstream)
    └── stream                       (stream requests: relaying the events to the client)

Off, `app[TRACER]` is None: the pipeline checks that one reference and
builds no span, imports nothing from OpenTelemetry.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from aiohttp import web

from ..appkeys import CONFIG, TRACER

if TYPE_CHECKING:
    from ..gateway.call import Call

log = logging.getLogger("bluesminds.tracing")

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def wanted(configured: bool, environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return configured or exporter == "otlp" or any(environ.get(name) for name in _ENDPOINT_VARS)


class Tracer:
    """The gateway's spans over one OpenTelemetry tracer provider (never the global one)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._tracer = provider.get_tracer("bluesminds")
        self._propagator = TraceContextTextMapPropagator()
        self._server = trace.SpanKind.SERVER
        self._client = trace.SpanKind.CLIENT
        self._error = trace.Status(trace.StatusCode.ERROR)

    @contextlib.contextmanager
    def request(self, request: web.Request, route: str) -> Iterator[Any]:
        """The request's span, current while the pipeline runs; its parent is the
        caller's `traceparent` when it sent a valid one (a malformed one is ignored)."""
        parent = self._propagator.extract(request.headers)
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else request.path
        with self._tracer.start_as_current_span(
                f"{request.method} {path}", context=parent, kind=self._server,
                record_exception=False, set_status_on_exception=False,
                attributes={"http.request.method": request.method, "http.route": path,
                            "url.path": request.path, "bluesminds.route": route}) as span:
            yield span

    def finish_request(self, span: Any, call: "Call", status: int) -> None:
        parsed = call.parsed
        principal = call.principal
        attributes: dict[str, Any] = {"http.response.status_code": status,
                                      "bluesminds.request_id": call.request_id}
        if parsed is not None and parsed.model:
            attributes["gen_ai.request.model"] = parsed.model[:200]
        if call.model is not None:
            attributes["bluesminds.model"] = call.model.name
        if call.upstream:
            attributes["bluesminds.upstream"] = call.upstream
        if principal is not None:
            attributes["bluesminds.account_id"] = principal.user_id
            attributes["bluesminds.key_id"] = principal.key_id
        if call.tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = call.tokens[0]
            attributes["gen_ai.usage.output_tokens"] = call.tokens[1]
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(self._error)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Any]:
        """A child of the current span (admission, stream)."""
        with self._tracer.start_as_current_span(name) as span:
            yield span

    async def attempt(self, run, upstream: Any, model: Any, *args: Any) -> Any:
        """One upstream attempt as a client span; `run` gets the traceparent header line to send."""
        with self._tracer.start_as_current_span(
                "upstream attempt", kind=self._client, record_exception=False, set_status_on_exception=False,
                attributes={"bluesminds.upstream": upstream.name, "bluesminds.model": model.name,
                            "gen_ai.request.model": model.upstream_model}) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            header = "".join(f"{k}: {v}\r\n" for k, v in carrier.items()).encode("latin-1")
            try:
                result = await run(upstream, model, *args, trace_headers=header)
            except Exception as exc:
                # A failure before any byte is carried out as an exception around the error.
                inner = exc.args[0] if exc.args else exc
                span.set_attributes({"bluesminds.outcome": type(inner).__name__,
                                     "error.type": getattr(inner, "code", None) or type(inner).__name__})
                span.set_status(self._error)
                raise
            status = getattr(result, "status", None)
            if isinstance(status, int) and hasattr(result, "upstream"):
                span.set_attributes({"http.response.status_code": status, "bluesminds.outcome": "ok"})
            else:
                span.set_attributes({"bluesminds.outcome": type(result).__name__,
                                     "error.type": getattr(result, "code", None) or type(result).__name__})
                span.set_status(self._error)
            return result


def build_provider(environ: Mapping[str, str]) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError("tracing is on (server.tracing or OTEL_* variables) but OpenTelemetry is not "
                           f"installed ({exc.name}); pip install 'bluesminds[otel]'") from None
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or "bluesminds"})
    provider = TracerProvider(resource=resource)
    # Batched on the SDK's own thread: the event loop only appends a span to a queue.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def setup(app: web.Application, environ: Mapping[str, str] | None = None) -> None:
    """Decide once, at creation; a test may put its own `Tracer` in app[TRACER] before start."""
    environ = os.environ if environ is None else environ
    app[TRACER] = Tracer(build_provider(environ)) \
        if wanted(app[CONFIG].current.server.tracing, environ) else None
    app.cleanup_ctx.append(_tracing_ctx)


async def _tracing_ctx(app: web.Application):
    tracer = app[TRACER]
    if tracer is not None:
        log.info("tracing on: spans go to the OTLP exporter")
    yield
    if tracer is not None:
        # Flush what is batched, off the loop: the exporter's HTTP call blocks.
        import asyncio
        await asyncio.get_running_loop().run_in_executor(None, tracer.provider.shutdown)
