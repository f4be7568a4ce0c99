"""Usage figures as the API and the dashboard show them: calls, errors and error rate,
tokens, credits (exact decimal text) and p50/p95 latency and time to first byte, per time
slot and per model, user, app or provider. The adding up is the database's
(hub/store/usage.py)."""

from __future__ import annotations

from typing import Any

from hub.store.sql import SqlStore
from hub.store.usage import DIMENSIONS, TIMED_CALLS, TIMINGS, Window, usage_rows
from middleware.money import credits_text

BUCKETS = {"hour": 3600, "day": 86400}

__all__ = ["BUCKETS", "DIMENSIONS", "TIMED_CALLS", "Window", "usage", "totals"]


async def usage(
    store: SqlStore,
    window: Window,
    bucket: int | None,
    by: str | None,
    timings: tuple[str, ...] = TIMINGS,
) -> list[dict[str, Any]]:
    """Entries oldest slot first; each names its slot `start` and, with `by`, its value.
    Percentiles only of `timings` (others are None): each costs a sort."""
    entries = []
    for row in await usage_rows(store, window, bucket, by, timings):
        entry: dict[str, Any] = {"start": row["start"]}
        if by is not None:
            entry[by] = row["key"]
        entries.append({**entry, **_figures(row)})
    return entries


async def totals(store: SqlStore, window: Window) -> dict[str, Any]:
    """The whole window's figures in one entry (zeros when it holds no call)."""
    entries = await usage(store, window, None, None)
    return entries[0] if entries else {"start": 0, **_figures({})}


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    calls, errors = row.get("calls", 0), row.get("errors", 0)
    return {
        "calls": calls,
        "errors": errors,
        "error_rate": round(errors / calls, 4) if calls else 0.0,
        "input_tokens": row.get("input_tokens", 0),
        "output_tokens": row.get("output_tokens", 0),
        "credits": credits_text(row.get("credits", 0)),
        "latency_ms": {"p50": row.get("duration_ms_p50"), "p95": row.get("duration_ms_p95")},
        "ttfb_ms": {"p50": row.get("ttfb_ms_p50"), "p95": row.get("ttfb_ms_p95")},
    }
