"""A completed stream turned into the canonical non-stream body the cache stores.

The cache keeps one form of every answer, the non-stream body, so a hit serves
either kind of request (replay.py writes the stream back from it). An
assembler reads the upstream's stream bytes beside the relay (the relay
already asked upstream for usage, so the usage chunk is there) and yields a
body only when the stream ended normally: `[DONE]` for data-only SSE, a
`response.completed` event for the Responses API. A cut stream, an in-band
error or an answer past the entry bound yields nothing.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..gateway.sse import complete_events


class _Assembler:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.seen = 0
        self.buffer = b""
        self.failed = False
        self.finished = False

    def feed(self, chunk: bytes) -> None:
        if self.failed or self.finished:
            return
        self.seen += len(chunk)
        if self.seen > self.max_bytes:
            self.failed = True  # too large to cache: stop paying for it
            self.buffer = b""
            return
        events, self.buffer = complete_events(self.buffer, chunk)
        for event in events or ():
            if event and not self.failed and not self.finished:
                self._event(event)

    def _event(self, event: bytes) -> None:
        raise NotImplementedError

    def body(self) -> dict[str, Any] | None:
        raise NotImplementedError


def _data(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class ChunkAssembler(_Assembler):
    """Chat and legacy completions: `data:` chunks merged choice by choice, ending at `[DONE]`."""

    def __init__(self, max_bytes: int, *, chat: bool) -> None:
        super().__init__(max_bytes)
        self.chat = chat
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def _event(self, event: bytes) -> None:
        payload = _data(event)
        if payload is None:
            return  # a comment or keep-alive
        if payload == b"[DONE]":
            self.finished = True
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.failed = True
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self.failed = True
            return
        for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if name in chunk and name not in self.head:
                self.head[name] = chunk[name]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._merge(choice)

    def _merge(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self.choices.setdefault(index, {"text": [], "role": None, "refusal": [], "tools": {},
                                                "finish_reason": None, "logprobs": None})
        if choice.get("finish_reason"):
            state["finish_reason"] = choice["finish_reason"]
        if not self.chat:
            if isinstance(choice.get("text"), str):
                state["text"].append(choice["text"])
            return
        delta = choice.get("delta") or {}
        if delta.get("role"):
            state["role"] = delta["role"]
        if isinstance(delta.get("content"), str):
            state["text"].append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            state["refusal"].append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            tool = state["tools"].setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                     "name": [], "arguments": []})
            if call.get("id"):
                tool["id"] = call["id"]
            if call.get("type"):
                tool["type"] = call["type"]
            function = call.get("function") or {}
            if isinstance(function.get("name"), str):
                tool["name"].append(function["name"])
            if isinstance(function.get("arguments"), str):
                tool["arguments"].append(function["arguments"])

    def body(self) -> dict[str, Any] | None:
        if not self.finished or self.failed or not self.choices:
            return None
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            if self.chat:
                message: dict[str, Any] = {"role": state["role"] or "assistant",
                                           "content": "".join(state["text"]) if state["text"] else None}
                if state["refusal"]:
                    message["refusal"] = "".join(state["refusal"])
                if state["tools"]:
                    message["tool_calls"] = [
                        {"id": tool["id"], "type": tool["type"],
                         "function": {"name": "".join(tool["name"]), "arguments": "".join(tool["arguments"])}}
                        for _, tool in sorted(state["tools"].items())]
                choices.append({"index": index, "message": message, "logprobs": None,
                                "finish_reason": state["finish_reason"]})
            else:
                choices.append({"index": index, "text": "".join(state["text"]), "logprobs": None,
                                "finish_reason": state["finish_reason"]})
        body = {"id": self.head.get("id"), "object": "chat.completion" if self.chat else "text_completion",
                "created": self.head.get("created"), "model": self.head.get("model"), "choices": choices}
        for name in ("system_fingerprint", "service_tier"):
            if self.head.get(name) is not None:
                body[name] = self.head[name]
        if self.usage is not None:
            body["usage"] = self.usage
        return body


class ResponseAssembler(_Assembler):
    """The Responses API: the terminal `response.completed` event carries the whole response."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.response: dict[str, Any] | None = None

    def _event(self, event: bytes) -> None:
        payload = _data(event)
        if payload is None or b"response." not in payload[:80] and b"error" not in payload[:80]:
            return
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if kind == "response.completed" and isinstance(parsed.get("response"), dict):
            self.response = parsed["response"]
            self.finished = True
        elif kind in ("response.failed", "response.incomplete", "error"):
            self.failed = True  # only a completed answer is worth serving again

    def body(self) -> dict[str, Any] | None:
        return self.response if self.finished and not self.failed else None


def assembler_for(family: str, max_bytes: int) -> _Assembler | None:
    if family == "chat":
        return ChunkAssembler(max_bytes, chat=True)
    if family == "completions":
        return ChunkAssembler(max_bytes, chat=False)
    if family == "responses":
        return ResponseAssembler(max_bytes)
    return None
