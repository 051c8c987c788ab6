"""What the gateway does with answers that are not what the route promises, with
answers too large to hold, with error bodies that never end, and with secrets
an upstream echoes back."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from proxy.appkeys import CONFIG, HEALTH, TRANSPORT
from proxy.fake_upstream import start_fake_upstream

from .canned_upstream import CannedUpstream
from .gateway_harness import GatewayHarness, upstream_entry

CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
HTML = b"<html><body>Welcome to nginx!</body></html>"


def http(status: str, body: bytes = b"", content_type: str = "application/json", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type.encode()
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


async def _post(harness: GatewayHarness, body: bytes = CHAT) -> tuple[int, dict | bytes, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/v1/chat/completions", data=body, headers=harness.headers(),
                                timeout=aiohttp.ClientTimeout(total=10)) as resp:
            raw = await resp.read()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = raw
            return resp.status, parsed, dict(resp.headers)


async def _alone(tmp_path, answer: bytes, body: bytes = CHAT, **harness_overrides):
    canned = await CannedUpstream(answer).start()
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("odd", canned.url)], **harness_overrides)
    await harness.start()
    try:
        status, got, _ = await _post(harness, body)
        health = harness.app[HEALTH].get("odd")
        return status, got, health, canned.requests
    finally:
        await harness.stop()
        await canned.stop()


@pytest.mark.parametrize("answer", [
    http("200 OK", HTML, "text/html"),
    http("200 OK", HTML, "application/json"),  # mislabelled
    http("200 OK", b"[1, 2, 3]"),  # JSON, but not an object
    b"HTTP/1.1 204 No Content\r\n\r\n",
    http("302 Found", b"", "text/html", b"Location: http://127.0.0.1:1/elsewhere\r\n"),
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
], ids=["html", "html-labelled-json", "json-array", "204", "302", "101"])
async def test_a_wrong_2xx_or_a_non_final_status_is_a_502_bad_response_counted_against_health(tmp_path, answer):
    status, body, health, requests = await _alone(tmp_path, answer)
    assert status == 502
    assert body["error"]["code"] == "upstream_bad_response"
    assert body["error"]["message"] == "The upstream answered with something that is not an OpenAI-compatible response."
    assert health.errors == 1
    assert requests == 1


@pytest.mark.parametrize("answer", [
    http("200 OK", b'{"id": "x", "object": "chat.completion"}'),  # JSON, not an event stream
    http("200 OK", HTML, "text/event-stream"),  # an event stream by its label only
], ids=["json", "html-labelled-sse"])
async def test_a_stream_that_is_not_an_event_stream_is_a_502_before_any_byte(tmp_path, answer):
    status, body, health, _ = await _alone(tmp_path, answer, STREAM)
    assert status == 502
    assert body["error"]["code"] == "upstream_bad_response"
    assert health.errors == 1


async def test_a_bad_answer_is_retried_on_another_upstream(tmp_path):
    canned = await CannedUpstream(http("200 OK", HTML, "text/html")).start()
    fake = await start_fake_upstream(name="good")
    # The bad upstream first in priority, so every request tries it first.
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("odd", canned.url, priority=1), upstream_entry("good", fake.url, priority=2)])
    await harness.start()
    try:
        status, body, headers = await _post(harness)
        assert status == 200
        assert headers["x-bluesminds-upstream"] == "good"
        assert body["choices"][0]["message"]["content"].startswith("good")
        assert canned.requests == 1
        assert harness.app[HEALTH].get("odd").last_error == "upstream answered 200 with a body that is not JSON"
    finally:
        await harness.stop()
        await canned.stop()
        await fake.stop()


async def test_an_answer_over_the_cap_is_502_too_large_not_retried_and_not_blamed(tmp_path):
    fakes = [await start_fake_upstream(name=n) for n in ("a", "b")]
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry(n, f.url) for n, f in zip("ab", fakes)])
    await harness.start()
    try:
        harness.app[TRANSPORT].max_body = 100  # a chat answer is ~400 bytes
        status, body, _ = await _post(harness)
        assert status == 502
        assert body["error"]["code"] == "upstream_response_too_large"
        assert body["error"]["message"] == "The upstream's answer is larger than the gateway's limit of 100 bytes."
        assert sum(f.stats()["requests"] for f in fakes) == 1  # another upstream would send the same
        assert [harness.app[HEALTH].get(n).errors for n in ("a", "b")] == [0, 0]
    finally:
        await harness.stop()
        for fake in fakes:
            await fake.stop()


async def test_an_endless_error_body_is_read_only_to_its_bound(tmp_path):
    # Declares 100 MB, sends 1 MB of it, then stalls: reading it whole would
    # wait out the timeout (a 504) after buffering the megabyte.
    head = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
            b'{"error": {"message": "' + b"x" * 1_000_000)
    canned = CannedUpstream(head, hold_open=True)
    await canned.start()
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("odd", canned.url, timeouts={"first_byte": "2s"})])
    await harness.start()
    try:
        status, body, _ = await _post(harness)
        assert status == 400
        message = body["error"]["message"]
        assert message.startswith('The upstream rejected the request: {"error": {"message": "xxx')
        assert len(message) < 300
    finally:
        await harness.stop()
        await canned.stop()


async def test_secrets_an_upstream_echoes_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("BM_UPSTREAM_KEY", "sk-upstream-0123456789")
    monkeypatch.setenv("BM_ADMIN_KEY", "admin-key-0123456789")
    echo = orjson.dumps({"error": {
        "message": "Invalid request with key sk-upstream-0123456789 (admin admin-key-0123456789)",
        "type": "invalid_request_error", "param": "sk-upstream-0123456789", "code": "bad_request"}})
    canned = await CannedUpstream(http("400 Bad Request", echo)).start()
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("odd", canned.url, api_key_env="BM_UPSTREAM_KEY")], admin={"key_env": "BM_ADMIN_KEY"})
    await harness.start()
    try:
        status, body, _ = await _post(harness)
    finally:
        await harness.stop()
        await canned.stop()
    assert status == 400
    assert body["error"] == {"message": "Invalid request with key [redacted] (admin [redacted])",
                             "type": "invalid_request_error", "param": "[redacted]", "code": "bad_request"}


async def test_secrets_in_an_in_band_stream_error_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("BM_UPSTREAM_KEY", "sk-upstream-0123456789")
    events = (b'data: {"error": {"message": "quota for sk-upstream-0123456789 exhausted"}}\n\n'
              b"data: [DONE]\n\n")
    canned = await CannedUpstream(http("200 OK", events, "text/event-stream")).start()
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [
        upstream_entry("odd", canned.url, api_key_env="BM_UPSTREAM_KEY")])
    await harness.start()
    try:
        status, body, _ = await _post(harness, STREAM)
    finally:
        await harness.stop()
        await canned.stop()
    assert status == 200
    assert body == b'data: {"error": {"message": "quota for [redacted] exhausted"}}\n\ndata: [DONE]\n\n'


async def test_a_503_names_each_upstream_and_why_without_its_url(tmp_path):
    fake = await start_fake_upstream(name="demo-a")
    harness = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("demo-a", fake.url)],
                                   health={"path": "/no/such/probe", "fall": 1})
    await harness.start()
    try:
        snapshot = harness.app[CONFIG].current
        await harness.app[HEALTH].probe_all(snapshot, harness.app[TRANSPORT])
        status, body, _ = await _post(harness)
    finally:
        await harness.stop()
        await fake.stop()
    assert status == 503
    assert body["error"]["code"] == "no_healthy_upstream"
    assert body["error"]["message"] == ("No healthy upstream can serve `gpt-4o-mini` right now "
                                        "(demo-a: probe answered 404; set health.path). Retry shortly.")
    assert "127.0.0.1" not in body["error"]["message"]
