"""Usage figures added up by the database: calls, errors, tokens and credits per time slot
and per model, user, app or provider, over every call of the window (no row limit).

Percentiles of latency and time to first byte come from PostgreSQL's percentile_disc; SQLite
has no such aggregate, so there only those two columns are read and ranked in Python.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, Select, and_, cast, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from hub.store.schema import model_calls
from hub.store.sql import SqlStore

# What usage can be broken down by, and the column that holds it.
DIMENSIONS = {"model": "model", "user": "user_did", "app": "app_did", "provider": "provider"}


@dataclass(frozen=True)
class Window:
    """Which calls to count: a time range and optional filters."""

    since: float
    until: float | None = None
    user_did: str | None = None
    app_did: str | None = None
    model: str | None = None


async def usage_rows(
    store: SqlStore, window: Window, bucket: int | None, by: str | None
) -> list[dict[str, Any]]:
    """One row per (slot start, dimension value), oldest slot first: `start`, `key`, calls,
    errors, input/output tokens, credits (integer units) and p50/p95 of duration and TTFB."""
    c = model_calls.c
    start = _slot(store, bucket)
    key: ColumnElement[Any] = c[DIMENSIONS[by]] if by is not None else literal_column("''")
    where = _where(window)
    sums = [
        func.count().label("calls"),
        func.count().filter(c.status == "failed").label("errors"),
        func.sum(c.input_tokens).label("input_tokens"),
        func.sum(c.output_tokens).label("output_tokens"),
        # PostgreSQL sums bigints as numeric: cast back to an integer of units.
        cast(func.sum(c.credits), BigInteger).label("credits"),
    ]
    postgres = not store.is_sqlite
    if postgres:
        for name in ("duration_ms", "ttfb_ms"):
            for q in (50, 95):
                # Literals, not bound parameters: the driver would send them untyped.
                fraction: ColumnElement[float] = literal_column(f"{q / 100}")
                ordered = func.percentile_disc(fraction).within_group(c[name])
                sums.append(ordered.label(f"{name}_p{q}"))
    # Only real expressions group and order: PostgreSQL reads a constant there as a position.
    groups = [e for e, real in ((start, bucket is not None), (key, by is not None)) if real]
    query: Select[Any] = (
        select(start.label("start"), key.label("key"), *sums)
        .where(where)
        .group_by(*groups)
        .order_by(*groups)
    )
    rows = await store.read(query)
    for row in rows:
        row["start"] = int(row["start"] or 0)
        for name in ("calls", "errors", "input_tokens", "output_tokens", "credits"):
            row[name] = int(row[name] or 0)
    if not postgres:
        await _rank_in_python(store, rows, start, key, where)
    return rows


async def _rank_in_python(
    store: SqlStore,
    rows: list[dict[str, Any]],
    start: ColumnElement[Any],
    key: ColumnElement[Any],
    where: ColumnElement[bool],
) -> None:
    c = model_calls.c
    timings = await store.read(
        select(start.label("start"), key.label("key"), c.duration_ms, c.ttfb_ms).where(where)
    )
    groups: dict[tuple[int, Any], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for t in timings:
        durations, ttfbs = groups[(int(t["start"] or 0), t["key"])]
        if t["duration_ms"] is not None:
            durations.append(t["duration_ms"])
        if t["ttfb_ms"] is not None:
            ttfbs.append(t["ttfb_ms"])
    for row in rows:
        durations, ttfbs = groups[(row["start"], row["key"])]
        durations.sort()
        ttfbs.sort()
        for name, values in (("duration_ms", durations), ("ttfb_ms", ttfbs)):
            row[f"{name}_p50"] = percentile(values, 0.5)
            row[f"{name}_p95"] = percentile(values, 0.95)


def percentile(values: list[int], q: float) -> int | None:
    """The smallest value with at least q of all at or below it (as percentile_disc)."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def _slot(store: SqlStore, bucket: int | None) -> ColumnElement[Any]:
    """The start of a call's time slot, in whole seconds."""
    c = model_calls.c
    if bucket is None:
        return literal_column("0")
    if store.is_sqlite:  # integer division truncates, as floor does for times after 1970
        return (cast(c.request_at, Integer) // bucket) * bucket
    return cast(func.floor(c.request_at / bucket) * bucket, BigInteger)


def _where(window: Window) -> ColumnElement[bool]:
    c = model_calls.c
    conditions = [c.request_at >= window.since]
    if window.until is not None:
        conditions.append(c.request_at < window.until)
    for column, value in (
        (c.user_did, window.user_did),
        (c.app_did, window.app_did),
        (c.model, window.model),
    ):
        if value is not None:
            conditions.append(column == value)
    return and_(*conditions)
