"""The failover benchmark's own run, small: one upstream of three killed with
SIGKILL under load, and every client still answered 200."""

from __future__ import annotations

from bench import failover_bench
from bench.procs import ProcessSet


async def test_killing_one_of_three_upstreams_mid_load_fails_nothing(tmp_path):
    with ProcessSet(str(tmp_path)) as procs:
        url, authorization, fakes = failover_bench.start(procs, str(tmp_path))
        outcome = await failover_bench.load(url, authorization, fakes[2][1], requests=900, clients=16,
                                            kill_at=1 / 3, seconds=120)
    assert outcome.killed_after >= 300
    assert outcome.answered >= 900
    assert outcome.failed == 0, outcome.report()
