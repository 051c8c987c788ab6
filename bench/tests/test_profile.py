from bench.profile import summarize

RAW = """\
process 12 (python -m proxy serve);<module> (proxy/__main__.py:3);run_forever (asyncio/base_events.py:608);handle (proxy/routes/openai_api.py:40);authenticate (proxy/auth/authenticator.py:99) 30
process 12 (python -m proxy serve);<module> (proxy/__main__.py:3);run_forever (asyncio/base_events.py:608);handle (proxy/routes/openai_api.py:52);forward (proxy/upstream/forward.py:77) 50
process 12 (python -m proxy serve);<module> (proxy/__main__.py:3);run_forever (asyncio/base_events.py:608);handle (proxy/routes/openai_api.py:40) 20
"""


def test_self_and_total_time_per_function_across_lines():
    text = summarize(RAW, top=3)
    lines = text.splitlines()
    assert lines[0].startswith("100 samples")
    files = lines[lines.index("top 3 files by self time:") + 1:][:3]
    assert files == [" 50.0%  proxy/upstream/forward.py", " 30.0%  proxy/auth/authenticator.py",
                     " 20.0%  proxy/routes/openai_api.py"]
    self_part = lines[lines.index("top 3 by self time:") + 1:][:3]
    assert self_part == [" 50.0%  forward (proxy/upstream/forward.py)",
                         " 30.0%  authenticate (proxy/auth/authenticator.py)",
                         " 20.0%  handle (proxy/routes/openai_api.py)"]
    total_part = lines[lines.index("top 3 by total time (entry points and event-loop plumbing left out):") + 1:]
    assert total_part[0] == "100.0%  handle (proxy/routes/openai_api.py)"


def test_no_samples():
    assert summarize("") == "py-spy recorded no samples"
