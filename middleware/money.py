"""Credits as exact integers: one unit is 10**-10 credit (the original's DECIMAL(20,10) scale).

Integers sum exactly on SQLite (which has no decimal type) and PostgreSQL alike.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

SCALE = 10**10


def to_units(value: Decimal | str | int) -> int:
    """Credits (a Decimal or its text) to integer units; refuses finer than 10**-10."""
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    units = amount * SCALE
    if units != units.to_integral_value():
        raise ValueError(f"{value} has more than 10 decimal places")
    return int(units)


def to_credits(units: int) -> Decimal:
    """Integer units back to a Decimal number of credits, exact, without trailing zeros."""
    whole, rest = divmod(abs(units), SCALE)
    sign = "-" if units < 0 else ""
    if rest == 0:
        return Decimal(f"{sign}{whole}")
    return Decimal(f"{sign}{whole}.{rest:010d}".rstrip("0"))


def credits_text(units: int) -> str:
    """Integer units as credits written out in full ("0.00000015", never "1.5E-7"): what
    people and JSON clients are shown."""
    return format(to_credits(units), "f")
