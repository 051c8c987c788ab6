"""server.access_log: on, one line per request through `bluesminds.access`, values escaped
and bounded; off, none. Through a real gateway on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson


from .gateway_harness import GatewayHarness, upstream_entry

CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


async def gateway_with(tmp_path, fake, access_log: bool) -> GatewayHarness:
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", fake.url)],
                                   server={"access_log": access_log})
    return await harness.start()


def access_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bluesminds.access"]


async def test_each_request_writes_one_access_line(tmp_path, fake, caplog):
    caplog.set_level(logging.INFO, logger="bluesminds.access")
    harness = await gateway_with(tmp_path, fake, True)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/chat/completions", data=CHAT,
                                    headers={**harness.headers(), "x-request-id": "req-one"}) as resp:
                assert resp.status == 200
            async with session.get(harness.url + "/healthz") as resp:
                assert resp.status == 200
            async with session.get(harness.url + "/v1/models") as resp:
                assert resp.status == 401
    finally:
        await harness.stop()
    lines = access_lines(caplog)
    assert len(lines) == 3, lines
    chat, health, models = lines
    assert chat.startswith("access method=POST path=/v1/chat/completions status=200 ms=")
    assert chat.endswith(" client=127.0.0.1 id=req-one model=gpt-4o-mini upstream=a")
    assert health.startswith("access method=GET path=/healthz status=200 ms=")
    assert models.startswith("access method=GET path=/v1/models status=401 ms=")


async def test_access_log_off_writes_nothing(tmp_path, fake, caplog):
    caplog.set_level(logging.INFO, logger="bluesminds.access")
    harness = await gateway_with(tmp_path, fake, False)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/chat/completions", data=CHAT,
                                    headers=harness.headers()) as resp:
                assert resp.status == 200
            async with session.get(harness.url + "/healthz") as resp:
                assert resp.status == 200
    finally:
        await harness.stop()
    assert access_lines(caplog) == []


async def test_client_values_cannot_forge_or_flood_a_line(tmp_path, fake, caplog):
    caplog.set_level(logging.INFO, logger="bluesminds.access")
    harness = await gateway_with(tmp_path, fake, True)
    forged = "gpt\r\naccess method=GET path=/forged status=200"
    try:
        async with aiohttp.ClientSession() as session:
            for model in (forged, "m" * 100_000):
                body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]})
                async with session.post(harness.url + "/v1/chat/completions", data=body,
                                        headers=harness.headers()) as resp:
                    assert resp.status == 404
        host, port = harness.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /a%0D%0Ab\"c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await harness.stop()
    forged_line, long_line, path_line = access_lines(caplog)
    assert "\n" not in forged_line and "\r" not in forged_line
    assert forged_line.endswith(' model="gpt\\x0d\\x0aaccess method=GET path=/forged status=200" upstream=-')
    assert long_line.endswith(" model=" + "m" * 200 + "...(+99800 chars) upstream=-")
    assert len(long_line) < 600
    assert " path=/a%0D%0Ab\"c " not in path_line  # raw quote is escaped
    assert ' path="/a%0D%0Ab\\x22c" status=404 ' in path_line


async def test_unauthenticated_requests_cannot_flood_the_log_either(tmp_path, fake, caplog):
    caplog.set_level(logging.INFO, logger="bluesminds.access")
    harness = await gateway_with(tmp_path, fake, True)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                body = orjson.dumps({"model": "m" * (3 * 1024 * 1024), "messages": [{"role": "user", "content": "x"}]})
                async with session.post(harness.url + "/v1/chat/completions", data=body) as resp:
                    assert resp.status == 401
    finally:
        await harness.stop()
    lines = access_lines(caplog)
    assert len(lines) == 5
    assert all(len(line) < 600 for line in lines), [len(line) for line in lines]
    assert all(" status=401 " in line for line in lines)
