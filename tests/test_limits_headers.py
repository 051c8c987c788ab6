import pytest

from proxy.limits.headers import DurationFormatter, rate_limit_headers


@pytest.mark.parametrize("seconds,text", [
    (0, "0ms"),
    (-3, "0ms"),
    (0.012, "12ms"),
    (0.0121, "13ms"),  # rounded up: waiting exactly this long must be enough
    (0.84, "840ms"),
    (0.999, "999ms"),
    (1, "1s"),
    (1.5, "1.5s"),
    (8.6401, "8.641s"),
    (59.9994, "1m0s"),
    (360, "6m0s"),
    (360.2, "6m1s"),
    (3723, "1h2m3s"),
    (43200, "12h0m0s"),
])
def test_go_style_durations(seconds, text):
    assert DurationFormatter()(seconds) == text


def test_cache_stays_bounded():
    fmt = DurationFormatter(max_entries=4)
    assert [fmt(n / 1000) for n in range(1, 11)] == [f"{n}ms" for n in range(1, 11)]
    assert len(fmt._cache) <= 4


def test_all_six_headers():
    assert rate_limit_headers(DurationFormatter(), 60, 59, 1.0, 150000, 149984, 360.0) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
    }


def test_an_unlimited_dimension_is_left_out():
    assert rate_limit_headers(DurationFormatter(), None, 0, 0.0, 1000, 10, 0.012) == {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "10",
        "x-ratelimit-reset-tokens": "12ms",
    }
    assert rate_limit_headers(DurationFormatter(), None, 0, 0.0, None, 0, 0.0) == {}
