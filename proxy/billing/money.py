"""Exact money: integer nano-units of the currency, rounded once, half-up, per invoice line.

Usage rows, rollups, plan fees and the limiter's budget all count in integer
nano-dollars (10⁻⁹ USD). A price of $0.15 per million tokens is 150 nano-dollars
a token, so a single small request keeps its exact cost instead of rounding to
zero (micro-dollars would round a 3-token request at that price to 0); a
64-bit integer still holds $9.2 billion. Only an invoice line is rounded, once,
half-up, to the currency's minor unit (cents), and stored in minor units.

Prices are read from YAML as decimal text (`0.15`, `"20.00"`), never through
float arithmetic: `Decimal(str(value))` keeps exactly the digits the operator wrote.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

NANO = 1_000_000_000  # nano-units per currency unit
PER_MILLION = 1_000_000

# Digits after the decimal point of each currency Creem can charge in.
MINOR_UNITS = {"USD": 2, "EUR": 2}


class BadAmount(ValueError):
    """A money value that is not a non-negative decimal with at most nine decimals."""


def to_nano(value: Any) -> int:
    """`20`, `0.15`, `"20.00"` → integer nano-units, exactly; more than nine decimals is refused."""
    if isinstance(value, bool):
        raise BadAmount(f"{value!r} is not an amount")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise BadAmount(f"{value!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise BadAmount(f"{value!r} is not a non-negative amount")
    nano = amount * NANO
    if nano != nano.to_integral_value():
        raise BadAmount(f"{value!r} has more than nine decimals")
    return int(nano)


def minor_per_unit(currency: str) -> int:
    return 10 ** MINOR_UNITS[currency]


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half away from zero, in integers only."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = -1 if numerator < 0 else 1
    q, r = divmod(abs(numerator), denominator)
    return sign * (q + (1 if 2 * r >= denominator else 0))


def nano_to_minor(nano: int | Fraction, currency: str) -> int:
    """The one rounding of an invoice line: nano-units → minor units (cents), half-up."""
    per = NANO // minor_per_unit(currency)
    if isinstance(nano, Fraction):
        return round_half_up(nano.numerator, nano.denominator * per)
    return round_half_up(nano, per)


def minor_to_text(minor: int, currency: str) -> str:
    """Cents as a decimal string: 1234 → "12.34" (exact; the API's money format)."""
    digits = MINOR_UNITS[currency]
    return str((Decimal(minor) / (10 ** digits)).quantize(Decimal(1).scaleb(-digits)))


def nano_to_text(nano: int) -> str:
    """Nano-units as an exact decimal string, trailing zeros trimmed: 1500 → "0.0000015"."""
    text = format(Decimal(nano) / NANO, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def nano_to_float(nano: int) -> float:
    """For fields that have always been JSON numbers (`cost_usd`): the float nearest the exact value."""
    return nano / NANO


def rate_to_nano_per_token(nano_per_million: int) -> Fraction:
    return Fraction(nano_per_million, PER_MILLION)


def quantize_text(value: Decimal, digits: int) -> str:
    return str(value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
