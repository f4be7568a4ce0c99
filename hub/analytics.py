"""Usage figures from call rows: calls, tokens, credits, errors, and p50/p95 latency and time
to first byte, per time bucket and per model, user or app.

Pure functions over rows as the store lists them, shared by the JSON API and the dashboard.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from middleware.money import credits_text

BUCKETS = {"hour": 3600, "day": 86400}
# What a usage row can be broken down by, and the call column that holds it.
DIMENSIONS = {"model": "model", "user": "user_did", "app": "app_did", "provider": "provider"}


def summarize(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one group of calls (credits as an exact decimal string)."""
    durations = sorted(c["duration_ms"] for c in calls if c["duration_ms"] is not None)
    ttfbs = sorted(c["ttfb_ms"] for c in calls if c["ttfb_ms"] is not None)
    errors = sum(1 for c in calls if c["status"] == "failed")
    return {
        "calls": len(calls),
        "errors": errors,
        "error_rate": round(errors / len(calls), 4) if calls else 0.0,
        "input_tokens": sum(c["input_tokens"] for c in calls),
        "output_tokens": sum(c["output_tokens"] for c in calls),
        "credits": credits_text(sum(c["credits"] for c in calls)),
        "latency_ms": {"p50": percentile(durations, 0.5), "p95": percentile(durations, 0.95)},
        "ttfb_ms": {"p50": percentile(ttfbs, 0.5), "p95": percentile(ttfbs, 0.95)},
    }


def aggregate(
    rows: Iterable[dict[str, Any]], bucket: int | None, by: str | None
) -> list[dict[str, Any]]:
    """One summary per (bucket start, dimension value), oldest bucket first. `bucket=None`
    folds the whole window into one bucket (start 0); `by=None` does not split it."""
    column = DIMENSIONS[by] if by is not None else None
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        start = int(row["request_at"] // bucket * bucket) if bucket else 0
        groups[(start, str(row[column] or "") if column else "")].append(row)
    data = []
    for (start, value), calls in sorted(groups.items()):
        entry: dict[str, Any] = {"start": start}
        if by is not None:
            entry[by] = value or None
        data.append({**entry, **summarize(calls)})
    return data


def percentile(values: list[int], q: float) -> int | None:
    """Nearest-rank percentile of sorted values."""
    return values[min(len(values) - 1, int(q * len(values)))] if values else None
