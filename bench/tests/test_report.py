from bench.load import LoadSample, StreamSample
from bench.report import Results, checks, load_rows, render
from bench.wrk import WrkResult

MB = 2**20


def _load(target, rps, p50, cpu, *, conns=16, scenario="chat", rep=1, requests=1000, hits=None, sent=None):
    result = WrkResult(requests=requests, sent=sent if sent is not None else requests + 1, seconds=5, rps=rps,
                       p50_ms=p50, p99_ms=p50 * 3, non_2xx=0, socket_errors=0)
    return LoadSample(target, scenario, conns, rep, result, cpu, requests if hits is None else hits)


def _stream(target, ttfb, conns=16):
    return StreamSample(target, conns, 1, 20, 20, 0, ttfb, ttfb * 2, 120.0, 130.0, 20, ())


def _results(**extra):
    results = Results(settings={"reps": 3, "seconds": 5, "connections": [1, 16], "scenarios": ["chat"],
                                "pinned": True, "stream_connections": [16]},
                      targets=["bare", "gateway"], **extra)
    return results


def test_medians_over_repetitions_and_sums_of_errors():
    rows = load_rows([_load("gateway", rps, 1.0, 100) for rps in (900, 1000, 2000)])
    row = rows[("gateway", "chat", 16)]
    assert (row.rps, row.reps, row.requests) == (1000, 3, 3000)


def test_forwarding_check_allows_only_requests_cut_off_in_flight():
    assert _load("bare", 1, 1, 1, requests=100, hits=100, sent=101).forwarded_ok
    assert _load("bare", 1, 1, 1, requests=100, hits=101, sent=101).forwarded_ok
    assert not _load("bare", 1, 1, 1, requests=100, hits=99, sent=101).forwarded_ok  # one lost
    assert not _load("bare", 1, 1, 1, requests=100, hits=102, sent=101).forwarded_ok  # one sent twice


def test_targets_met_and_not_met():
    results = _results(
        samples=[_load("bare", 1000, 1.0, 200), _load("gateway", 850, 1.1, 260),
                 _load("bare", 500, 0.50, 300, conns=1), _load("gateway", 400, 0.90, 390, conns=1)],
        streams=[_stream("bare", 2.0), _stream("gateway", 2.4)],
        startup={"gateway": (0.6, "")}, rss_loaded={"gateway": 120 * MB},
        scale={"auth": {"hit_cycling_p50_us": 3.0, "keys": 100_000}, "usage": {"stats_ms": 150.0, "rows": 1_000_000}},
    )
    found = {c.goal: (c.measured, c.met) for c in checks(results)}
    assert found["chat, 16 clients: req/s ≥ 80 % of bare"] == ("85% (850 vs 1,000)", True)
    assert found["chat, 16 clients: CPU/request ≤ 1.25× bare"] == ("1.30× (260 vs 200 µs)", False)
    assert found["chat, 1 client: added p50 over bare ≤ 0.3 ms"] == ("+0.40 ms", False)
    assert found["stream, 16 clients: TTFB p50 within 0.5 ms of bare"] == ("+0.40 ms", True)
    assert found["gateway RSS after load ≤ 100 MB"] == ("120 MB", False)
    assert found["gateway start-up < 1 s"] == ("0.60 s", True)
    assert found["auth cache hit < 20 µs"][1] is True
    assert found["usage stats over 1M rows < 100 ms"] == ("150.0 ms (slowest query, 1,000,000 rows)", False)


def test_missing_figures_are_reported_not_guessed():
    found = {c.goal: c.met for c in checks(_results())}
    assert set(found.values()) == {None}


def test_render_shows_ratios_to_bare():
    text = render(_results(samples=[_load("bare", 1000, 1.0, 200), _load("gateway", 850, 1.1, 260)],
                           skipped={"litellm": "not installed"}))
    assert "| gateway | chat | 16 | 850 | 1.10 | 3.30 | 260 | 0.85× | – | 1.30× | 0 | 0 | 0.00 |" in text
    assert "**litellm did not run:** not installed" in text
