"""Reading query parameters: whole numbers and times that are what they claim, or a 400
naming the parameter (never a 500 from a database that refuses them)."""

from __future__ import annotations

import math

from starlette.requests import Request

from middleware.errors import HubError

MAX_OFFSET = 10**9


def whole(request: Request, name: str, default: int, maximum: int) -> int:
    """A non-negative whole number of plain ASCII digits, at most `maximum`."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    # str.isdigit alone admits digits int() refuses, such as '²'.
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise HubError(400, "invalid_field", f"'{name}' must be a whole number.", name)
    return min(int(value), maximum)


def moment(request: Request, name: str) -> float | None:
    """A Unix time in seconds, or None when not given."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise HubError(400, "invalid_field", f"'{name}' must be a Unix time in seconds.", name)
    return number
