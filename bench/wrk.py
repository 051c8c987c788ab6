"""wrk as the load generator: a Lua script per body, and its summary parsed.

The script counts the requests it *sent* (wrk reports those it completed), so
a run can show that every request was forwarded: the upstream's hit counter
must land between the two; the gap is at most one request per connection,
cut off in flight when wrk's duration ran out.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import orjson

CHAT_BODY = orjson.dumps({
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a concise assistant for a hardware store."},
        {"role": "user", "content": "Which screws should I use to hang a 20 kg mirror on a plasterboard "
                                    "wall, and do I need wall plugs? Answer in two sentences."},
    ],
    "max_tokens": 64,
    "temperature": 0.2,
})
EMBEDDINGS_BODY = orjson.dumps({
    "model": "text-embedding-3-small",
    "input": "A 20 kg mirror on plasterboard needs cavity anchors rated for the load.",
})
STREAM_BODY = orjson.dumps({**orjson.loads(CHAT_BODY), "stream": True,
                            "stream_options": {"include_usage": True}})

RESPONSES_BODY = orjson.dumps({
    "model": "gpt-4o-mini",
    "instructions": "You are a concise assistant for a hardware store.",
    "input": "Which screws should I use to hang a 20 kg mirror on a plasterboard wall, and do I need wall "
             "plugs? Answer in two sentences.",
    "max_output_tokens": 64,
    "temperature": 0.2,
})
RESPONSES_STREAM_BODY = orjson.dumps({**orjson.loads(RESPONSES_BODY), "stream": True})

SCENARIOS = {"chat": ("/v1/chat/completions", CHAT_BODY), "embeddings": ("/v1/embeddings", EMBEDDINGS_BODY),
             "responses": ("/v1/responses", RESPONSES_BODY)}
# Streams whose time to first byte is measured: (path, body) per API.
STREAMS = {"chat": ("/v1/chat/completions", STREAM_BODY), "responses": ("/v1/responses", RESPONSES_STREAM_BODY)}

_LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{auth}
sent = 0
local threads = {{}}
local req = nil

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  req = wrk.format()
end

function request()
  sent = sent + 1
  return req
end

function done(summary, latency, requests)
  -- wrk calls request() once before the run to check the script; that one is never sent.
  local total = -1
  for _, t in ipairs(threads) do
    total = total + t:get("sent")
  end
  io.write(string.format("bench-sent: %d\\n", total))
end
"""


def lua_script(body: bytes, authorization: str | None) -> str:
    text = body.decode()
    if "]==]" in text:
        raise ValueError("body cannot be embedded in a Lua long string")
    auth = f'wrk.headers["Authorization"] = "{authorization}"' if authorization else ""
    return _LUA.format(body=text, auth=auth)


def write_script(directory: str, name: str, body: bytes, authorization: str | None) -> str:
    path = os.path.join(directory, f"{name}.lua")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(lua_script(body, authorization))
    return path


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # completed, as wrk counts them
    sent: int  # issued by the script; sent - requests were cut off at the end
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_output(text: str) -> WrkResult:
    """The summary `wrk --latency` prints, plus the script's `bench-sent` line."""
    def need(pattern: str) -> re.Match:
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output has no line matching {pattern!r}:\n{text}")
        return match

    total = need(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),")
    p50 = need(r"^\s*50(?:\.000)?%\s+([\d.]+)(us|ms|s|m|h)\s*$")
    p99 = need(r"^\s*99(?:\.000)?%\s+([\d.]+)(us|ms|s|m|h)\s*$")
    rps = need(r"^Requests/sec:\s+([\d.]+)")
    sent = re.search(r"^bench-sent: (\d+)", text, re.MULTILINE)
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses: (\d+)", text, re.MULTILINE)
    errors = re.search(r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text, re.MULTILINE)
    requests = int(total.group(1))
    return WrkResult(
        requests=requests,
        sent=int(sent.group(1)) if sent else requests,
        seconds=float(total.group(2)) * _DURATION_UNITS[total.group(3)],
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def run(url: str, script: str, *, connections: int, seconds: float, cpu: int | None = None) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "10s", "-s", script, url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    # wrk stops itself after -d; the timeout only guards against a wedged wrk.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_output(done.stdout)
