"""When a failed delivery is tried again."""

from __future__ import annotations


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling from `base`,
    never more than `cap` (a sink down for a day is tried every `cap` seconds, not never)."""
    if attempts < 1:
        return 0.0
    # Bounded exponent: 2**attempts of a large count would overflow a float.
    return min(cap, base * 2.0 ** min(attempts - 1, 60))
