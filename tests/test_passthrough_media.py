"""Moderations, images, audio (speech out, uploads in) and rerank through a real gateway, with the openai SDK."""

from __future__ import annotations

import asyncio
import tracemalloc

import aiohttp
import openai
import pytest

from proxy.appkeys import USAGE
from proxy.fake_upstream import start_fake_upstream
from proxy.fake_upstream.media import speech_bytes

from .db_access import query_dicts
from .gateway_harness import GatewayHarness, upstream_entry

MODELS = {
    "omni-moderation": {"upstream_model": "openai/omni-moderation-latest"},
    "gpt-image-1": {"upstream_model": "openai/gpt-image-1", "pricing": {"input": 5.0, "output": 40.0}},
    "tts": {"upstream_model": "openai/tts-1"},
    "whisper": {"upstream_model": "openai/whisper-1"},
    "rerank-english": {"upstream_model": "cohere/rerank-english-v3.0"},
}
BOUNDARY = "bm-test-boundary"
MiB = 1024 * 1024


@pytest.fixture
async def fake():
    upstream = await start_fake_upstream(name="u")
    yield upstream
    await upstream.stop()


@pytest.fixture
async def harness(tmp_path, fake):
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", fake.url)], models=MODELS,
                             server={"max_body": "32MiB"})
    await h.start()
    yield h
    await h.stop()


@pytest.fixture
async def sdk(harness):
    client = openai.AsyncOpenAI(base_url=harness.url + "/v1", api_key=harness.key, max_retries=0)
    yield client
    await client.close()


async def settled(h: GatewayHarness) -> list[dict]:
    await h.app[USAGE].flush()
    return query_dicts(h.db_path, "SELECT * FROM usage ORDER BY id")


def form_head(fields: dict[str, str], filename: str = "a.wav") -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: audio/wav\r\n\r\n")
    return "".join(parts).encode()


FORM_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def test_moderations_pass_through_and_count_the_request_without_tokens(harness, sdk, fake):
    answer = await sdk.moderations.create(model="omni-moderation", input=["hello", "world"])
    assert [r.flagged for r in answer.results] == [False, False]
    assert answer.model == "omni-moderation"
    assert fake.stats()["last_body"]["model"] == "openai/omni-moderation-latest"
    [row] = await settled(harness)
    assert (row["route"], row["status"], row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (
        "moderations", 200, 0, 0, 0)


async def test_images_are_billed_from_the_usage_gpt_image_reports(harness, sdk):
    answer = await sdk.images.generate(model="gpt-image-1", prompt="a red fox", n=2)
    assert len(answer.data) == 2 and answer.data[0].b64_json
    [row] = await settled(harness)
    assert (row["route"], row["prompt_tokens"], row["completion_tokens"]) == ("images", 3, 200)
    assert row["cost_nano"] == 3 * 5_000 + 200 * 40_000


async def test_speech_streams_the_upstreams_audio_bytes_unchanged(harness, sdk):
    async with sdk.audio.speech.with_streaming_response.create(model="tts", voice="alloy",
                                                               input="hello there") as response:
        assert response.headers["content-type"] == "audio/mpeg"
        pieces = [piece async for piece in response.iter_bytes()]
    assert b"".join(pieces) == speech_bytes("u", "hello there")
    assert len(b"".join(pieces)) == 11 * 1024
    [row] = await settled(harness)
    assert (row["route"], row["status"], row["stream"], row["partial"]) == ("audio_speech", 200, 1, 0)
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (3, 0, 1)  # ceil(11 / 4)


async def test_a_multi_megabyte_transcription_upload_reaches_the_upstream_whole(harness, sdk, fake):
    audio = bytes(range(256)) * (5 * MiB // 256)
    answer = await sdk.audio.transcriptions.create(model="whisper", file=("speech.wav", audio, "audio/wav"))
    assert answer.text == f"u heard {5 * MiB} bytes of speech.wav"
    seen = fake.stats()["last_body"]
    assert seen["model"] == "openai/whisper-1" and seen["file_bytes"] == 5 * MiB
    [row] = await settled(harness)
    assert (row["route"], row["status"], row["upstream"]) == ("audio_transcriptions", 200, "u")


async def test_translations_in_text_format_keep_the_upstreams_content_type(harness, sdk, fake):
    text = await sdk.audio.translations.create(model="whisper", file=("a.mp3", b"x" * 1000, "audio/mpeg"),
                                               response_format="text")
    assert text.strip() == "u heard 1000 bytes of a.mp3"
    assert fake.stats()["by_path"] == {"/v1/audio/translations": 1}


async def test_an_upload_is_relayed_as_it_arrives_not_held_whole(harness, fake):
    """16 MiB sent chunked from a generator: the gateway's memory peak stays a small fraction of it."""
    size = 16 * MiB
    piece = b"\0" * (64 * 1024)

    async def body():
        yield form_head({"model": "whisper"})
        for _ in range(size // len(piece)):
            yield piece
        yield FORM_TAIL

    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(harness.url + "/v1/audio/transcriptions", data=body(),
                                    headers={**harness.headers(), "Content-Type": FORM_TYPE}) as resp:
                status, answer = resp.status, await resp.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (status, answer) == (200, {"text": f"u heard {size} bytes of a.wav"})
    assert peak < 4 * MiB, f"peak {peak} bytes for an {size}-byte upload"


async def test_an_oversized_upload_is_refused_413_without_being_buffered(tmp_path, fake):
    h = GatewayHarness.write(str(tmp_path / "cfg"), [upstream_entry("u", fake.url)], models=MODELS,
                             server={"max_body": "8MiB"})
    await h.start()
    piece = b"\0" * (64 * 1024)
    sent = 0

    async def body():
        nonlocal sent
        yield form_head({"model": "whisper"})
        while sent <= 8 * MiB + len(piece):
            sent += len(piece)
            yield piece
        await asyncio.Event().wait()  # hold the rest back: the answer must come before the body ends

    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(h.url + "/v1/audio/transcriptions", data=body(),
                                    headers={**h.headers(), "Content-Type": FORM_TYPE}) as resp:
                status, answer = resp.status, await resp.json()
        _, peak = tracemalloc.get_traced_memory()
        async with aiohttp.ClientSession() as session:
            declared = 9 * MiB
            async with session.post(h.url + "/v1/audio/transcriptions", data=b"x" * declared,
                                    headers={**h.headers(), "Content-Type": FORM_TYPE}) as resp:
                declared_answer = (resp.status, (await resp.json())["error"]["message"])
    finally:
        tracemalloc.stop()
        await h.stop()
    assert status == 413
    assert answer["error"] == {"message": "Request body exceeds the limit of 8388608 bytes.",
                               "type": "invalid_request_error", "param": None, "code": "request_too_large"}
    assert peak < 4 * MiB, f"peak {peak} bytes"  # half the limit: the body was never held whole
    assert declared_answer == (413, f"Request body is {declared} bytes; the limit is 8388608 bytes.")


async def test_bad_uploads_get_clear_400s(harness):
    cases = [
        (FORM_TYPE, form_head({"language": "en"}) + b"abc" + FORM_TAIL,
         "You must provide a model parameter, as a form field before the file."),
        (FORM_TYPE, f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--{BOUNDARY}--\r\n'
         .encode(), "Missing required parameter: 'file'."),
        ("application/json", b'{"model": "whisper"}',
         "This route takes a multipart/form-data body (a file upload); got Content-Type 'application/json'."),
        ("multipart/form-data", b"--x\r\n", "The multipart/form-data body is malformed: its Content-Type names no "
         "boundary."),
        (FORM_TYPE, form_head({"model": "whisper"})[:40], "The multipart/form-data body is malformed: it ends before "
         "its last boundary."),
        (FORM_TYPE, form_head({"model": "whisper", "api_base": "http://evil"}) + FORM_TAIL,
         "Unrecognized request argument supplied: api_base. The gateway chooses the upstream; remove this field."),
    ]
    async with aiohttp.ClientSession() as session:
        for content_type, data, message in cases:
            async with session.post(harness.url + "/v1/audio/transcriptions", data=data,
                                    headers={**harness.headers(), "Content-Type": content_type}) as resp:
                assert (resp.status, (await resp.json())["error"]["message"]) == (400, message)
    assert await settled(harness) == []  # refused before admission: nothing to account


async def test_json_families_refuse_a_body_without_model(harness):
    async with aiohttp.ClientSession() as session:
        for path, body in [("/v1/moderations", {"input": "x"}), ("/v1/images/generations", {"prompt": "x"}),
                           ("/v1/audio/speech", {"input": "x", "voice": "alloy"}),
                           ("/v1/rerank", {"query": "x", "documents": ["a"]})]:
            async with session.post(harness.url + path, json=body, headers=harness.headers()) as resp:
                assert (resp.status, await resp.json()) == (400, {"error": {
                    "message": "You must provide a model parameter.", "type": "invalid_request_error",
                    "param": "model", "code": "missing_required_parameter"}}), path
        async with session.post(harness.url + "/v1/rerank", json={"model": "rerank-english", "query": "x"},
                                headers=harness.headers()) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["message"] == "Missing required parameter: 'documents'."


async def test_rerank_is_billed_from_litellms_meta_tokens(harness, fake):
    body = {"model": "rerank-english", "query": "red fox", "documents": ["a red fox", "a blue whale", "fox"],
            "top_n": 2}
    async with aiohttp.ClientSession() as session:
        async with session.post(harness.url + "/v1/rerank", json=body, headers=harness.headers()) as resp:
            answer = await resp.json()
    assert resp.status == 200
    assert [r["index"] for r in answer["results"]] == [0, 2]
    assert answer["meta"]["billed_units"] == {"search_units": 1}
    assert fake.stats()["last_body"]["model"] == "cohere/rerank-english-v3.0"
    [row] = await settled(harness)
    assert (row["route"], row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == ("rerank", 9, 0, 0)


async def test_upstream_faults_apply_to_the_media_families(harness, sdk, fake):
    await fake.set_fault({"status": 400, "count": 1})
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.audio.transcriptions.create(model="whisper", file=("a.wav", b"x" * 10, "audio/wav"))
    assert caught.value.body["message"] == "u: injected fault (HTTP 400)"
    await fake.set_fault({"html": True})
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.moderations.create(model="omni-moderation", input="x")
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_bad_response"
    await fake.set_fault({"json_body": {"error": "not audio"}})
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.audio.speech.create(model="tts", voice="alloy", input="x")
    assert caught.value.status_code == 502
