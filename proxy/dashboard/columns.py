"""The columns of the logs and usage tables: the page and its CSV export print the same cells."""

from __future__ import annotations

from typing import Any, Mapping

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


def stat_cells(row: Mapping[str, Any]) -> list[str]:
    return [
        number(row["requests"]), number(row["errors"]), number(row["prompt_tokens"]),
        number(row["completion_tokens"]), number(row["total_tokens"]), usd(row["cost_usd"]),
        ms(row["latency_ms_p95"]),
    ]
