import pytest

from bench.run import parse_args, usage_figure

USAGE_OUTPUT = """\
record(): 1.20 µs per call
database: 1,000,000 usage rows, 12,345 rollup rows, 250 MB
stats (from rollups):
  admin, all users, 90 days, group_by=day                       12.50 ms
  admin, all users, 90 days, group_by=user                      40.25 ms
logs (one page of 50, newest first):
  admin, everyone, first page                                  900.00 ms
"""


def test_usage_figure_is_the_slowest_stats_query_not_a_logs_query():
    found = usage_figure(USAGE_OUTPUT)
    assert (found["stats_ms"], found["rows"]) == (40.25, 1_000_000)
    assert found["summary"].endswith("40.2 ms (admin, all users, 90 days, group_by=user)")


def test_usage_figure_missing():
    assert usage_figure("boom") == "usage_bench.py printed no stats timings"


def test_quick_defaults_and_overrides():
    args = parse_args(["--quick", "--targets", "bare,gateway", "--connections", "1,8"])
    assert (args.reps, args.seconds, args.keys, args.targets, args.connections) == (
        1, 2.0, 10_000, ["bare", "gateway"], [1, 8])
    full = parse_args([])
    assert (full.reps, full.seconds, full.keys) == (3, 4.0, 100_000)


def test_unknown_target_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--targets", "nginx"])
    assert "unknown targets: nginx" in capsys.readouterr().err
