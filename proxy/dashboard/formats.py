"""How numbers, money and times read on a page; the CSV export uses the same text."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def usd(value: Any) -> str:
    if value is None:
        return "—"
    if not value:
        return "$0.00"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    # Per-request costs are fractions of a cent: keep six places, drop trailing zeros past cents.
    text = f"{value:.6f}".rstrip("0")
    return "$" + (text if len(text.split(".")[1]) >= 2 else f"{value:.2f}")


def when(value: Any) -> str:
    if value is None:
        return "—"
    return datetime.fromtimestamp(float(value), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def day(value: Any) -> str:
    if value is None:
        return "—"
    return datetime.fromtimestamp(float(value), timezone.utc).strftime("%Y-%m-%d")


def ms(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:,.1f} ms"


FILTERS = {"number": number, "usd": usd, "when": when, "day": day, "ms": ms}
