"""A fake OpenAI-compatible upstream that behaves like a LiteLLM proxy.

Tests, the demo and the benchmarks point the gateway at it. Every API route is
served both under `/v1` and without it, as LiteLLM does:

    POST /v1/chat/completions   non-stream and SSE stream
    POST /v1/completions        legacy text completions, stream too
    POST /v1/embeddings         float or base64 (little-endian float32) vectors
    GET  /v1/models             OpenAI list shape
    POST /v1/messages, /v1/messages/count_tokens
                                Anthropic's Messages API, non-stream and typed events (anthropic.py)
    POST /v1/moderations, /v1/images/generations, /v1/audio/speech (binary),
         /v1/audio/transcriptions, /v1/audio/translations (multipart), /v1/rerank
                                the media families (media.py)
    GET  /health/liveliness     200 "I'm alive!" (JSON string, like LiteLLM)
    GET  /health/readiness      200 {"status": "healthy", ...}

Answers are deterministic so tests can assert exact numbers:

    content            the pieces "<name>", " says", " hello", " from", ...
                       (the upstream name first, so tests see who answered)
    completion_tokens  pieces emitted = min(stream_chunks, max_tokens)
                       (finish_reason "length" when max_tokens cut it short)
    prompt_tokens      chat: whitespace-separated words of each message's
                       text + 1 per message; completions and embeddings:
                       words of each string, or length of each token array

A stream sends one chunk with the assistant role, one chunk per piece, one
chunk with finish_reason, then (with stream_options.include_usage) a chunk
with `"choices": []` and the usage, then `data: [DONE]`.

Control plane (not counted as API requests; last_headers has lower-case keys):

    GET    /_fake/stats    {"requests", "by_path", "in_flight", "open_streams",
                            "cancelled", "health_checks", "last_headers",
                            "last_body", "fault"}
    GET    /_fake/faults   the current plan (or null)
    POST   /_fake/faults   set the fault plan (see faults.py for every fault)
    DELETE /_fake/faults   clear it
    POST   /_fake/reset    zero the counters (in_flight and open_streams are
                           live gauges and stay as they are)

    GET    /_fake/landing  200: where the redirect faults point

Modules: faults (the plan and how each fault is served), payloads (the
deterministic bodies), anthropic and media (the other APIs' bodies), state (settings and counters), app (routes and
handlers), runner (in-process and CLI serving).

Every response carries `x-fake-upstream: <name>` and echoes `x-request-id`.
"""

from .app import create_fake_app
from .faults import Fault, huge_body, parse_fault
from .payloads import DEFAULT_EMBEDDING_DIM, DEFAULT_MODELS, MAX_EMBEDDING_DIM
from .runner import FakeUpstream, run_fake_upstream, start_fake_upstream
from .state import CONFIG_KEY, STATE_KEY

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_EMBEDDING_DIM",
    "DEFAULT_MODELS",
    "MAX_EMBEDDING_DIM",
    "STATE_KEY",
    "Fault",
    "FakeUpstream",
    "create_fake_app",
    "huge_body",
    "parse_fault",
    "run_fake_upstream",
    "start_fake_upstream",
]
