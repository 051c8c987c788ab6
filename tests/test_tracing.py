"""OpenTelemetry traces through a real gateway on 127.0.0.1, spans caught by the SDK's
in-memory exporter: one server span per request, children for admission, each
upstream attempt and the stream; the caller's traceparent is the parent, and each
attempt's own traceparent reaches the upstream. Off, no tracer exists at all."""

from __future__ import annotations

import aiohttp
import orjson
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proxy import server
from proxy.app import create_app
from proxy.appkeys import FORWARDER, TRACER
from proxy.cli.accounts import create_user_and_key
from proxy.fake_upstream import start_fake_upstream
from proxy.observability.tracing import Tracer, wanted

from .gateway_harness import GatewayHarness, upstream_entry

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


class TracedGateway:
    def __init__(self, harness: GatewayHarness, exporter: InMemorySpanExporter, runner) -> None:
        self.harness, self.exporter, self.runner = harness, exporter, runner

    @classmethod
    async def start(cls, config_dir: str, upstreams) -> "TracedGateway":
        harness = GatewayHarness.write(config_dir, upstreams)
        harness.user_id, harness.key = create_user_and_key(harness.db_settings, "t@example.com", "correct horse battery",
                                                           "test", "k", bcrypt_rounds=4)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        app = harness.app = create_app(config_dir)
        assert app[TRACER] is None  # nothing in the config or environment asks for traces
        app[TRACER] = Tracer(provider)
        runner, port = await server.start(app, "127.0.0.1", 0)
        harness.url = f"http://127.0.0.1:{port}"
        return cls(harness, exporter, runner)

    async def stop(self) -> None:
        await self.runner.cleanup()

    def spans(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for span in self.exporter.get_finished_spans():
            out.setdefault(span.name, []).append(span)
        return out


async def post(gw: TracedGateway, body: dict, headers: dict | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.harness.url + "/v1/chat/completions", data=orjson.dumps(body),
                                headers={**gw.harness.headers(), **(headers or {})}) as resp:
            return resp.status, await resp.read()


def hex_span(span) -> str:
    return format(span.context.span_id, "016x")


async def test_a_request_with_a_traceparent_is_one_span_tree_and_the_attempt_is_the_upstreams_parent(tmp_path):
    dead = await start_fake_upstream(name="dead")
    await dead.stop()
    live = await start_fake_upstream(name="live")
    gw = await TracedGateway.start(str(tmp_path / "c"), [upstream_entry("dead", dead.url, priority=1),
                                                          upstream_entry("live", live.url, priority=2)])
    try:
        status, _ = await post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                               {"traceparent": TRACEPARENT, "x-request-id": "req-traced"})
        assert status == 200
        seen = live.state.last_headers
    finally:
        await gw.stop()
        await live.stop()
    spans = gw.spans()
    assert sorted(spans) == ["POST /v1/chat/completions", "admission", "upstream attempt"]
    (root,) = spans["POST /v1/chat/completions"]
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and format(root.parent.span_id, "016x") == CALLER_SPAN
    assert root.kind.name == "SERVER"
    attrs = dict(root.attributes)
    assert attrs["http.response.status_code"] == 200
    assert attrs["http.route"] == "/v1/chat/completions"
    assert attrs["bluesminds.model"] == "gpt-4o-mini"
    assert attrs["bluesminds.upstream"] == "live"
    assert attrs["bluesminds.request_id"] == "req-traced"
    assert attrs["bluesminds.account_id"] == gw.harness.user_id
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    (admission,) = spans["admission"]
    assert admission.parent.span_id == root.context.span_id
    first, second = sorted(spans["upstream attempt"], key=lambda s: s.start_time)
    assert [s.parent.span_id for s in (first, second)] == [root.context.span_id] * 2
    assert (first.attributes["bluesminds.upstream"], first.attributes["bluesminds.outcome"],
            first.attributes["error.type"]) == ("dead", "UpstreamError", "upstream_unreachable")
    assert first.status.status_code.name == "ERROR"
    assert (second.attributes["bluesminds.upstream"], second.attributes["http.response.status_code"],
            second.attributes["bluesminds.outcome"]) == ("live", 200, "ok")
    # The upstream sees the same trace, with the attempt that reached it as the parent.
    assert seen["traceparent"] == f"00-{TRACE_ID}-{hex_span(second)}-01"


async def test_a_stream_has_its_own_span_and_a_refused_request_stops_at_admission(tmp_path, fake):
    gw = await TracedGateway.start(str(tmp_path / "c"), [upstream_entry("a", fake.url)])
    try:
        status, body = await post(gw, {"model": "gpt-4o-mini", "stream": True,
                                       "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
        streamed = gw.spans()
        gw.exporter.clear()
        status, _ = await post(gw, {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
                               {"traceparent": "00-not-a-valid-header"})
        assert status == 404
        refused = gw.spans()
    finally:
        await gw.stop()
    assert sorted(streamed) == ["POST /v1/chat/completions", "admission", "stream", "upstream attempt"]
    (root,) = streamed["POST /v1/chat/completions"]
    assert {s.name: s.parent.span_id for s in (*streamed["admission"], *streamed["stream"],
                                              *streamed["upstream attempt"])} == {
        "admission": root.context.span_id, "stream": root.context.span_id,
        "upstream attempt": root.context.span_id}
    assert streamed["stream"][0].end_time >= streamed["upstream attempt"][0].end_time
    assert sorted(refused) == ["POST /v1/chat/completions", "admission"]
    (root,) = refused["POST /v1/chat/completions"]
    assert root.parent is None  # a malformed traceparent starts a new trace
    assert root.attributes["http.response.status_code"] == 404
    assert root.attributes["gen_ai.request.model"] == "no-such-model"
    assert refused["admission"][0].status.status_code.name == "ERROR"


async def test_traces_are_off_unless_asked_for(tmp_path, fake):
    assert wanted(False, {}) is False
    assert wanted(True, {}) is True
    assert wanted(False, {"OTEL_TRACES_EXPORTER": "otlp"}) is True
    assert wanted(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) is True
    assert wanted(True, {"OTEL_SDK_DISABLED": "true"}) is False
    assert wanted(True, {"OTEL_TRACES_EXPORTER": "none"}) is False
    harness = await GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url)]).start()
    try:
        assert harness.app[TRACER] is None and harness.app[FORWARDER].tracer is None
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/chat/completions", headers={
                    **harness.headers(), "traceparent": TRACEPARENT}, data=orjson.dumps(
                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})) as resp:
                assert resp.status == 200
        # Off, the gateway neither answers for nor forwards the caller's trace.
        assert "traceparent" not in fake.state.last_headers
    finally:
        await harness.stop()


async def test_server_tracing_exports_over_otlp_http_and_flushes_at_shutdown(tmp_path, fake, monkeypatch):
    received: list[tuple[str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((request.content_type, await request.read()))
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    collector = web.Application()
    collector.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(collector)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port 0 chose
    # The standard variable names the collector; server.tracing turns traces on.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
    harness = GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url)], server={"tracing": True})
    try:
        await harness.start()
        tracer = harness.app[TRACER]
        assert isinstance(tracer, Tracer) and harness.app[FORWARDER].tracer is tracer
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/chat/completions", headers=harness.headers(),
                                    data=orjson.dumps({"model": "gpt-4o-mini",
                                                       "messages": [{"role": "user", "content": "hi"}]})) as resp:
                assert resp.status == 200
        assert fake.state.last_headers["traceparent"].startswith("00-")
        await harness.stop()  # the batch is exported at shutdown, off the event loop
    finally:
        await harness.stop()
        await runner.cleanup()
    assert len(received) == 1
    content_type, body = received[0]
    assert content_type == "application/x-protobuf"
    for name in (b"POST /v1/chat/completions", b"admission", b"upstream attempt", b"gateway-under-test"):
        assert name in body
