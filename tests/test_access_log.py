"""The access line: one line per request, whatever the client puts in the values it controls."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest

from proxy.gateway.logvalues import log_value


async def _post_unauthenticated(gateway, model: str) -> int:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]})
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=body) as resp:
            await resp.read()
            return resp.status


def _access_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bluesminds.access"]


async def test_cr_lf_in_the_model_cannot_forge_an_access_line(gateway, caplog):
    caplog.set_level(logging.INFO, logger="bluesminds.access")
    forged = "x\r\nrequest id=forged route=chat model=gpt-4o-mini upstream=a status=200 latency_ms=1.0"
    assert await _post_unauthenticated(gateway, forged) == 401
    lines = _access_lines(caplog)
    assert len(lines) == 1
    assert "\n" not in lines[0] and "\r" not in lines[0]
    assert "model=x\\r\\nrequest\\x20id=forged\\x20" in lines[0]
    assert " status=401 " in lines[0]


async def test_a_huge_model_name_adds_a_bounded_line(gateway, caplog):
    caplog.set_level(logging.INFO, logger="bluesminds.access")
    for _ in range(5):
        assert await _post_unauthenticated(gateway, "m" * (3 * 1024 * 1024)) == 401
    lines = _access_lines(caplog)
    assert len(lines) == 5
    assert all(len(line) < 400 for line in lines), [len(line) for line in lines]
    assert f"model={'m' * 128}...(+{3 * 1024 * 1024 - 128} chars) " in lines[0]


@pytest.mark.parametrize("value, logged", [
    ("gpt-4o-mini", "gpt-4o-mini"),
    ("", "-"),
    (None, "-"),
    ("a b", "a\\x20b"),
    ("tab\there", "tab\\there"),
    ("ключ", "\\u043a\\u043b\\u044e\\u0447"),
    ("x" * 130, "x" * 128 + "...(+2 chars)"),
])
def test_log_value_escapes_and_bounds(value, logged):
    assert log_value(value) == logged
