"""The columns of the logs and usage tables: the page and its CSV export print the same cells."""

from __future__ import annotations

from typing import Any, Mapping

from ..billing.money import NANO
from .formats import ms, number, usd, when

LOG_HEADERS = ("Time (UTC)", "Request ID", "Model", "Key", "Status", "Prompt tokens",
               "Completion tokens", "Total tokens", "Cost (USD)", "Latency")
STAT_HEADERS = ("Requests", "Errors", "Prompt tokens", "Completion tokens", "Total tokens",
                "Cost (USD)", "Latency p95")


def key_label(key_id: int | None, names: Mapping[int, str]) -> str:
    if key_id is None:
        return "(no key)"
    return f"{names[key_id]} (#{key_id})" if key_id in names else f"#{key_id}"


def log_cells(entry: Mapping[str, Any], names: Mapping[int, str]) -> list[str]:
    return [
        when(entry["ts"]), entry["request_id"], entry["model"], key_label(entry["key_id"], names),
        str(entry["status"]), number(entry["prompt_tokens"]), number(entry["completion_tokens"]),
        number(entry["total_tokens"]), usd(entry["cost_usd"]), ms(entry["latency_ms"]),
    ]


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe(cell: str) -> str:
    """A spreadsheet runs a cell starting with = + - @ as a formula; a leading ' keeps it text."""
    return "'" + cell if cell.startswith(_FORMULA) else cell


class LogCells:
    """log_cells for raw rows at export speed, each cell made safe for a spreadsheet:
    the same text (tests hold them equal), without a dict and a datetime per row."""

    def __init__(self, names: Mapping[int, str]) -> None:
        self._names = names
        self._labels: dict[int | None, str] = {}
        self._days: dict[int, str] = {}
        self._minutes = [f" {m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
        self._seconds = [f"{s:02d}" for s in range(60)]

    def __call__(self, ts: float, request_id: str, model: str, key_id: int | None, status: int,
                 prompt: int, completion: int, total: int, cost_nano: int, latency: float) -> list[str]:
        cost = cost_nano / NANO  # as the API's cost_usd is derived
        label = self._labels.get(key_id)
        if label is None:
            label = self._labels[key_id] = safe(key_label(key_id, self._names))
        day_number, rest = divmod(int(ts // 1), 86400)
        day = self._days.get(day_number)
        if day is None:
            day = self._days[day_number] = when(day_number * 86400)[:10]
        cells = [day + self._minutes[rest // 60] + self._seconds[rest % 60], safe(request_id),
                 safe(model), label, str(status), number(prompt), number(completion), number(total),
                 usd(cost), ms(latency)]
        if prompt < 0 or completion < 0 or total < 0 or cost < 0 or latency < 0 or status < 0:
            cells = [safe(cell) for cell in cells]  # a negative number starts with "-"
        return cells


def stat_cells(row: Mapping[str, Any]) -> list[str]:
    return [
        number(row["requests"]), number(row["errors"]), number(row["prompt_tokens"]),
        number(row["completion_tokens"]), number(row["total_tokens"]), usd(row["cost_usd"]),
        ms(row["latency_ms_p95"]),
    ]
