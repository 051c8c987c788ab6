"""The app's middleware: aiohttp's 405 and 413 become OpenAI-shaped errors of their own classes."""

from __future__ import annotations

import aiohttp

from proxy.errors import BodyTooLarge, MethodNotAllowed


async def test_a_wrong_method_is_a_405_naming_the_allowed_ones(gateway):
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/v1/chat/completions", headers=gateway.headers()) as resp:
            body = await resp.json()
            assert resp.status == 405
            assert resp.headers["Allow"] == "POST"
    assert body == {"error": {"message": "Method GET is not allowed on /v1/chat/completions.",
                              "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}}


def test_the_statuses_belong_to_the_classes():
    assert (MethodNotAllowed.status, MethodNotAllowed.code) == (405, "method_not_allowed")
    assert (BodyTooLarge.status, BodyTooLarge.code) == (413, "request_too_large")
