"""Usage accounting: one row per /v1 request, written in batches, rolled up by day.

    record.py        UsageRecord, the row the pipeline hands over
    tokens.py        token estimates when the upstream reports none
    recorder.py      UsageRecorder: queue → one transaction per batch; USAGE, setup(app)
    spill.py         checked, fsynced JSON-lines appends; forgiving reads of the spill file
    schema.py        tables and indexes (migration set "bluesminds.usage")
    rollup.py        batch insert + rollup upsert, rebuild, latency percentiles
    stats.py         stats, logs and per-key queries (HTTP: proxy/routes/usage_routes.py)
    quota_totals.py  the current day's and month's totals the limiter starts from
"""

from .quota_totals import load_window_totals, window_totals
from .record import UsageRecord
from .recorder import UsageRecorder, setup
from ..appkeys import USAGE
from .rollup import rebuild_rollups, write_batch
from .stats import key_stats
from .tokens import estimate_prompt_tokens, estimate_text_tokens

__all__ = [
    "USAGE", "UsageRecord", "UsageRecorder", "estimate_prompt_tokens", "estimate_text_tokens",
    "key_stats", "load_window_totals", "rebuild_rollups", "setup", "window_totals", "write_batch",
]
