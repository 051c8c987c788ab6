"""Bad input on the Responses routes: each a clear 4xx (or 502 for upstream garbage) in
OpenAI's error shape, and every admitted request still accounted."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.appkeys import STORE, USAGE


async def post(gateway, body, *, path="/v1/responses", raw: bytes | None = None):
    async with aiohttp.ClientSession() as http:
        kwargs = {"data": raw, "headers": {**gateway.headers(), "Content-Type": "application/json"}} \
            if raw is not None else {"json": body, "headers": gateway.headers()}
        async with http.post(gateway.url + path, **kwargs) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.read()


async def rows(gateway):
    await gateway.app[USAGE].flush()
    return await gateway.app[STORE].read(lambda conn: [tuple(r) for r in conn.execute(
        "SELECT route, status, error_type, partial, estimated, completion_tokens FROM usage ORDER BY id")])


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/responses/compact", "/v1/responses/input_tokens"])
async def test_a_body_without_model_is_a_400(gateway, upstreams, path):
    status, _, body = await post(gateway, {"input": "hi"}, path=path)
    assert status == 400
    assert b'"code":"missing_required_parameter"' in body and b'"param":"model"' in body
    assert sum(u.stats()["requests"] for u in upstreams) == 0


@pytest.mark.parametrize("body, param, code", [
    ({"model": "gpt-4o-mini", "input": 5}, "input", "invalid_type"),
    ({"model": "gpt-4o-mini", "input": "x", "stream": "yes"}, "stream", "invalid_type"),
    ({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 0}, "max_output_tokens", "integer_below_min_value"),
    ({"model": "gpt-4o-mini", "input": "x", "previous_response_id": 7}, "previous_response_id", "invalid_type"),
    ({"model": "gpt-4o-mini", "input": "x", "api_base": "http://evil"}, "api_base", "unknown_parameter"),
])
async def test_bad_fields_are_400s_naming_the_field(gateway, body, param, code):
    status, _, answer = await post(gateway, body)
    assert status == 400, answer
    assert f'"param":"{param}"'.encode() in answer and f'"code":"{code}"'.encode() in answer


async def test_compact_cannot_stream(gateway):
    status, _, answer = await post(gateway, {"model": "gpt-4o-mini", "input": "x", "stream": True},
                                   path="/v1/responses/compact")
    assert status == 400
    assert b"Response compaction cannot be streamed." in answer


async def test_an_oversized_body_is_a_413(gateway, upstreams):
    big = b'{"model":"gpt-4o-mini","input":"' + b"x" * (11 * 1024 * 1024) + b'"}'
    status, _, answer = await post(gateway, None, raw=big)
    assert status == 413
    assert b'"error"' in answer
    assert sum(u.stats()["requests"] for u in upstreams) == 0


async def test_garbage_events_from_the_upstream_end_with_an_error_event_and_a_partial_row(gateway, upstreams):
    for fake in upstreams:
        await fake.set_fault({"sse_garbage": True})
    status, content_type, body = await post(gateway, {"model": "gpt-4o-mini", "input": "x", "stream": True})
    assert status == 200 and content_type == "text/event-stream"
    last = body.rstrip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\ndata: {")
    assert b"the answer is incomplete" in last
    assert b"[DONE]" not in body
    assert (await rows(gateway))[-1] == ("responses", 502, "cut", 1, 1, 0)


async def test_a_stream_cut_midway_is_billed_for_what_was_delivered(gateway, upstreams):
    for fake in upstreams:
        await fake.set_fault({"cut_after": 6})  # created, in_progress, item, part, two deltas
    status, _, body = await post(gateway, {"model": "gpt-4o-mini", "input": "x", "stream": True})
    assert status == 200
    assert body.count(b"event: response.output_text.delta") == 2
    assert body.rstrip().split(b"\n\n")[-1].startswith(b"event: error\n")
    route, code, error_type, partial, estimated, completion = (await rows(gateway))[-1]
    assert (route, code, error_type, partial, estimated) == ("responses", 502, "cut", 1, 1)
    assert completion >= 1


async def test_a_non_json_answer_is_a_502(gateway, upstreams):
    for fake in upstreams:
        await fake.set_fault({"not_json": True})
    status, _, body = await post(gateway, {"model": "gpt-4o-mini", "input": "x"})
    assert status == 502
    assert b'"code":"upstream_bad_response"' in body or b"not an OpenAI-compatible response" in body
    assert (await rows(gateway))[-1][:2] == ("responses", 502)


async def test_the_upstream_failing_in_band_is_relayed_and_not_retried(gateway, upstreams):
    failed = (b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_x"}}\n\n'
              b'event: response.failed\ndata: {"type":"response.failed","response":{"id":"resp_x",'
              b'"status":"failed","usage":{"input_tokens":2,"output_tokens":1}}}\n\n')
    from proxy.gateway.typed_sse import TypedSSERelay
    relay = TypedSSERelay()
    out = relay.feed(failed[:40]) + relay.feed(failed[40:])
    assert out == failed
    assert relay.done and relay.saw_error
    assert relay.answer_id == "resp_x"
    assert relay.tokens() == (2, 1, None, None)


def test_the_relay_forwards_every_event_unchanged_and_stops_at_the_terminal_one():
    from proxy.gateway.typed_sse import TypedSSERelay
    stream = (b'event: response.created\r\ndata: {"type":"response.created","sequence_number":0,'
              b'"response":{"id":"resp_1","usage":null}}\r\n\r\n'
              b': keep-alive\r\n\r\n'
              b'event: response.output_text.delta\r\ndata: {"type":"response.output_text.delta","delta":"he\\"y"}\r\n\r\n'
              b'event: response.completed\r\ndata: {"type":"response.completed","response":{"id":"resp_1",'
              b'"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":1},"output_tokens":4,'
              b'"output_tokens_details":{"reasoning_tokens":2}}}}\r\n\r\n'
              b'event: response.output_text.delta\r\ndata: {"after": "the end"}\r\n\r\n')
    relay = TypedSSERelay()
    out = b"".join(relay.feed(stream[i:i + 7]) for i in range(0, len(stream), 7))
    assert out == stream.replace(b"\r\n", b"\n").split(b'event: response.output_text.delta\ndata: {"after"')[0]
    assert relay.done and not relay.saw_error
    assert relay.answer_id == "resp_1"
    assert relay.content_chars == 5  # the delta as sent, its escape included: an estimate, read without a parse
    assert relay.tokens() == (3, 4, 1, 2)


def test_data_only_typed_events_are_understood_too():
    from proxy.gateway.typed_sse import TypedSSERelay
    relay = TypedSSERelay()
    relay.feed(b'data: {"type":"response.created","response":{"id":"resp_2"}}\n\n'
               b'data: {"type":"response.completed","response":{"id":"resp_2","usage":{"input_tokens":1,'
               b'"output_tokens":2}}}\n\n')
    assert relay.done and relay.answer_id == "resp_2" and relay.tokens() == (1, 2, None, None)
