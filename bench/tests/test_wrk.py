import asyncio
import shutil

import pytest

from bench import wrk
from proxy.fake_upstream import STATE_KEY, create_fake_app

OUTPUT = """\
Running 2s test @ http://127.0.0.1:8080/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.90ms  512.33us   9.80ms   80.00%
    Req/Sec     8.41k   310.22     8.90k    70.00%
  Latency Distribution
     50%  850.00us
     75%    2.00ms
     90%    2.50ms
     99%    1.20s
  16742 requests in 2.00s, 9.40MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   8371.00
Transfer/sec:      4.70MB
bench-sent: 16758
"""


def test_parse_output_reads_every_figure_in_milliseconds():
    result = wrk.parse_output(OUTPUT)
    assert result == wrk.WrkResult(requests=16742, sent=16758, seconds=2.0, rps=8371.0, p50_ms=0.85,
                                   p99_ms=1200.0, non_2xx=7, socket_errors=5)


def test_parse_output_without_errors_counts_zero():
    clean = "\n".join(line for line in OUTPUT.splitlines()
                      if "Socket errors" not in line and "Non-2xx" not in line)
    result = wrk.parse_output(clean)
    assert (result.non_2xx, result.socket_errors) == (0, 0)


def test_parse_output_names_the_missing_line():
    with pytest.raises(ValueError, match="Requests/sec"):
        wrk.parse_output(OUTPUT.replace("Requests/sec:", "Reqs:"))


def test_chat_body_is_about_300_bytes():
    assert 250 <= len(wrk.CHAT_BODY) <= 350


def test_lua_script_embeds_body_and_key():
    script = wrk.lua_script(b'{"a": "b"}', "Bearer bm-x")
    assert 'wrk.body = [==[{"a": "b"}]==]' in script
    assert 'wrk.headers["Authorization"] = "Bearer bm-x"' in script
    assert "Authorization" not in wrk.lua_script(b"{}", None)


def test_lua_script_refuses_a_body_that_ends_the_long_string():
    with pytest.raises(ValueError):
        wrk.lua_script(b'{"a": "]==]"}', None)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
async def test_a_real_wrk_run_counts_what_it_sent(aiohttp_server, tmp_path):
    server = await aiohttp_server(create_fake_app(name="w"))
    script = wrk.write_script(str(tmp_path), "chat", wrk.CHAT_BODY, None)
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, lambda: wrk.run(url, script, connections=2, seconds=1))
    hits = server.app[STATE_KEY].requests
    assert result.requests > 0 and result.non_2xx == 0
    assert result.requests <= hits <= result.sent <= result.requests + 2
