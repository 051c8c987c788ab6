"""The report's lines for the backends scale scenario (bench/scale_backends.py)."""

from bench.report import _scale_lines


def test_the_backends_figures_read_as_one_line_per_target_and_the_admission():
    figures = {"rps": 1000.4, "p50_ms": 1.234, "p99_ms": 9.876, "non_2xx": 0, "cpu_us_per_request": 387.2}
    scale = {"backends": {"targets": {"bare": figures, "postgres+redis w2": {**figures, "rps": 514.0}},
                          "admission": {"redis_p50_us": 361.6, "redis_p99_us": 4543.9, "memory_p50_us": 2.81},
                          "connections": 32, "rounds": 2}}
    assert _scale_lines(scale) == [
        "- bare: 1000 req/s, p50 1.23 ms, p99 9.88 ms, 387 µs CPU per request (32 connections, "
        "median of 2 alternated rounds).",
        "- postgres+redis w2: 514 req/s, p50 1.23 ms, p99 9.88 ms, 387 µs CPU per request (32 connections, "
        "median of 2 alternated rounds).",
        "- One Redis admission (admit + settle): p50 362 µs, p99 4544 µs; in-process p50 2.8 µs.",
    ]
    assert _scale_lines({"backends": "timed out after 180 s"}) == ["- Backends: timed out after 180 s"]
