"""server.log_format: json writes one JSON object per line, access lines with the
request's fields, other records with level, logger, message and exception; never a
secret; values bounded; a reload switches the format. Through a real gateway, and
`bluesminds serve` as a real process for the bytes it writes to stderr."""

from __future__ import annotations

import io
import logging

import aiohttp
import orjson

from proxy.appkeys import CONFIG
from proxy.observability import logs

from .gateway_harness import GatewayHarness, serve_process, upstream_entry
from .redis_server import free_port

CANARY = "bm-canary0000000000000000000000000000000000"
COOKIE_CANARY = "cookiecanary-5f1e2d"


def chat(model: str = "gpt-4o-mini") -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})


async def test_serve_writes_json_lines_with_the_request_fields_and_no_secret(tmp_path, fake):
    harness = GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url)],
                                   server={"log_format": "json", "log_level": "info"})
    from proxy.cli.accounts import create_user_and_key
    harness.user_id, harness.key = create_user_and_key(harness.db_settings, "t@example.com", "correct horse battery",
                                                       "test", "k", bcrypt_rounds=4)
    port = free_port()
    proc = await serve_process(harness.config_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/v1/chat/completions", data=chat(), headers={
                    **harness.headers(), "x-request-id": "req-json", "Cookie": f"bm_session={COOKIE_CANARY}"}) as resp:
                assert resp.status == 200
            async with session.post(url + "/v1/chat/completions", data=chat(),
                                    headers={"Authorization": f"Bearer {CANARY}"}) as resp:
                assert resp.status == 401
            async with session.post(url + "/v1/chat/completions", data=chat("gpt\r\n{\"forged\": 1}" + "m" * 500),
                                    headers=harness.headers()) as resp:
                assert resp.status == 404
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    text = stderr.decode()
    for secret in (harness.key, CANARY, COOKIE_CANARY, harness.key[:12]):
        assert secret not in text
    lines = [line for line in text.splitlines() if line]
    records = [orjson.loads(line) for line in lines]  # every line is one object
    assert all(isinstance(r, dict) and {"ts", "level", "logger", "message"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "bluesminds.access"]
    paths = [(r["path"], r["status"]) for r in access]
    assert ("/v1/chat/completions", 200) in paths and ("/v1/chat/completions", 401) in paths
    ok = next(r for r in access if r.get("request_id") == "req-json")
    assert ok["message"] == "access" and ok["level"] == "info" and ok["method"] == "POST"
    assert (ok["route"], ok["model"], ok["upstream"], ok["account_id"]) == \
        ("chat", "gpt-4o-mini", "a", harness.user_id)
    assert ok["prompt_tokens"] > 0 and ok["completion_tokens"] > 0 and ok["latency_ms"] >= 0
    assert ok["client"] == "127.0.0.1"
    denied = next(r for r in access if r["status"] == 401)
    assert denied["account_id"] is None and denied["model"] == "gpt-4o-mini"
    forged = next(r for r in access if r["status"] == 404)
    assert forged["model"].startswith("gpt\r\n{\"forged\": 1}mmm") and forged["model"].endswith("...(+318 chars)")  # 518 chars, 200 kept
    assert not any(r.get("forged") for r in records)


async def test_warnings_and_exceptions_are_json_and_a_reload_switches_the_format(tmp_path, fake):
    stream = io.StringIO()
    handler = logs.handler("text", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    harness = GatewayHarness.write(str(tmp_path / "c"), [upstream_entry("a", fake.url)],
                                   server={"log_format": "text"})
    await harness.start()
    try:
        harness.sections["server"]["log_format"] = "json"
        harness.save()
        result = await harness.app[CONFIG].reload()
        assert result.error is None and harness.app[CONFIG].current.server.log_format == "json"
        try:
            raise ValueError("boom \x1b[31m\r\nforged line")
        except ValueError:
            logging.getLogger("bluesminds.test").exception("failed with %s", "x" * 10_000)
        logging.getLogger("bluesminds.test").warning("plain warning")
        harness.sections["server"]["log_format"] = "text"
        harness.save()
        assert (await harness.app[CONFIG].reload()).error is None
        assert harness.app[CONFIG].current.server.log_format == "text"
        logging.getLogger("bluesminds.test").warning("text again")
    finally:
        await harness.stop()
        root.removeHandler(handler)
    out = stream.getvalue().splitlines()
    failed, warning = (orjson.loads(line) for line in out if line.startswith("{"))
    assert (failed["level"], failed["logger"]) == ("error", "bluesminds.test")
    assert failed["message"].startswith("failed with xxx") and failed["message"].endswith(f"...(+{len('failed with ') + 10_000 - logs.MAX_MESSAGE} chars)")
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert failed["exception"].endswith("ValueError: boom \x1b[31m\r\nforged line")
    assert (warning["level"], warning["message"]) == ("warning", "plain warning")
    assert out[-1].endswith(" WARNING bluesminds.test text again")
