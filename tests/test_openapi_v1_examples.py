"""The reference's /v1 examples against a running gateway with the project's fake upstream
behind it: each request example is accepted (not refused as invalid, no 5xx), and each
answer example's top-level keys are in the live answer of the same route, so the examples
a reader copies describe what this gateway really takes and gives."""

from __future__ import annotations

import json

import aiohttp
import pytest

from proxy.fake_upstream import start_fake_upstream
from proxy.openapi import ROUTES

from .gateway_harness import GatewayHarness, upstream_entry
from .test_openapi_served import REFUSED

# Every model an example names, as a gateway operator would declare it.
MODELS = {
    "gpt-4o-mini": {"pricing": {"input": 0.15, "output": 0.6}},
    "text-embedding-3-small": {"kind": "embedding", "pricing": {"input": 0.02, "output": 0}},
    "omni-moderation-latest": {},
    "gpt-image-1": {"pricing": {"input": 5.0, "output": 40.0}},
    "rerank-english-v3.0": {},
    "tts-1": {},
    "whisper-1": {},
}
BOUNDARY = "bm-openapi-boundary"
# The audio uploads are multipart, so their entries have no JSON request example: a
# minimal form of the kind the description names stands in for it.
UPLOAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
          f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
          f"Content-Type: audio/wav\r\n\r\nRIFF....WAVEfmt \r\n--{BOUNDARY}--\r\n").encode()
# Routes on a stored response go after the one that creates it, and its deletion last.
ORDER = {"POST /v1/responses": 0, "DELETE /v1/responses/{response_id}": 2}


@pytest.fixture
async def gateway(tmp_path):
    fake = await start_fake_upstream(name="u")
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("u", fake.url)], models=MODELS)
    await harness.start()
    yield harness
    await harness.stop()
    await fake.stop()


def route_by(method: str, path: str):
    [route] = [r for r in ROUTES if r.key == (method, path)]
    return route


def v1_routes():
    routes = [r for r in ROUTES if r.path.startswith("/v1/")]
    return sorted(routes, key=lambda r: ORDER.get(f"{r.method} {r.path}", 1))


async def test_every_v1_example_is_accepted_and_answered_with_the_documented_keys(gateway):
    headers = gateway.headers()
    names = {"model": "gpt-4o-mini"}
    checked = []
    async with aiohttp.ClientSession() as client:
        for route in v1_routes():
            path = route.path
            if path == "/v1/responses/{response_id}/cancel":
                # Only a background response can be cancelled: the example's own, made so.
                background = {**route_by("POST", "/v1/responses").example_request, "background": True}
                async with client.post(gateway.url + "/v1/responses", json=background, headers=headers) as made:
                    assert made.status == 200, await made.text()
                    path = path.replace("{response_id}", (await made.json())["id"])
            for name, value in names.items():
                path = path.replace("{" + name + "}", value)
            assert "{" not in path, f"{route.method} {route.path}: no object to name"
            if route.body == "v1.audio_upload":
                kwargs = {"data": UPLOAD,
                          "headers": {**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}}
            elif route.example_request is not None:
                kwargs = {"json": route.example_request, "headers": headers}
            else:
                assert route.body is None, f"{route.method} {route.path} takes a body but has no example"
                kwargs = {"headers": headers}
            async with client.request(route.method, gateway.url + path, **kwargs) as response:
                raw = await response.read()
                where = f"{route.method} {path}: {response.status} {raw[:300]!r}"
                answer = json.loads(raw) if response.content_type == "application/json" else None
                code = (answer.get("error") or {}).get("code") if isinstance(answer, dict) else None
                assert not (response.status == 400 and code in REFUSED), where
                assert response.status < 500, where
                assert response.status == route.status, where
                assert response.content_type == route.content_type, where
                if isinstance(route.example_response, dict):
                    missing = set(route.example_response) - set(answer)
                    assert not missing, f"{where}: the example's keys {sorted(missing)} are not in the answer"
            if route.method == "POST" and route.path == "/v1/responses":
                names["response_id"] = answer["id"]
            checked.append(f"{route.method} {route.path}")
    assert checked == [f"{r.method} {r.path}" for r in v1_routes()]
    assert len(checked) == len([r for r in ROUTES if r.path.startswith("/v1/")]) == 20
