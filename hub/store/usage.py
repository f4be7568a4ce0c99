"""Usage figures added up by the database: calls, errors, tokens and credits per time slot
and per model, user, app or provider, and p50/p95 latency and time to first byte, over
every call of the window (no row limit, nothing ranked in Python).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, Select, and_, case, cast, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from hub.store.schema import model_calls
from hub.store.sql import SqlStore

TIMINGS = ("duration_ms", "ttfb_ms")
# Percentiles of latency are over at most this many calls, the window's latest: counts and
# sums are over every call, but ranking sorts, and a month of a busy hub is a big sort.
TIMED_CALLS = 20_000
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
    store: SqlStore,
    window: Window,
    bucket: int | None,
    by: str | None,
    timings: tuple[str, ...] = TIMINGS,
) -> list[dict[str, Any]]:
    """One row per (slot start, dimension value), oldest slot first: `start`, `key`, calls,
    errors, input/output tokens, credits (integer units), and p50/p95 of each of `timings`
    (duration_ms, ttfb_ms) over the window's latest TIMED_CALLS calls."""
    c = model_calls.c
    start = _slot(store, bucket)
    key: ColumnElement[Any] = c[DIMENSIONS[by]] if by is not None else literal_column("''")
    where = _where(window)
    # Only real expressions group and order: PostgreSQL reads a constant there as a position.
    groups = [e for e, real in ((start, bucket is not None), (key, by is not None)) if real]
    query: Select[Any] = (
        select(
            start.label("start"),
            key.label("key"),
            func.count().label("calls"),
            func.count().filter(c.status == "failed").label("errors"),
            func.sum(c.input_tokens).label("input_tokens"),
            func.sum(c.output_tokens).label("output_tokens"),
            # PostgreSQL sums bigints as numeric: cast back to an integer of units.
            cast(func.sum(c.credits), BigInteger).label("credits"),
        )
        .where(where)
        .group_by(*groups)
        .order_by(*groups)
    )
    rows = await store.read(query)
    for row in rows:
        row["start"] = int(row["start"] or 0)
        for name in ("calls", "errors", "input_tokens", "output_tokens", "credits"):
            row[name] = int(row[name] or 0)
    if timings and rows:
        # Ranking sorts every value: past TIMED_CALLS calls, rank the latest ones only.
        cutoff = await store.read(
            select(c.request_at)
            .where(where)
            .order_by(c.request_at.desc())
            .offset(TIMED_CALLS - 1)
            .limit(1)
        )
        if cutoff:
            where = and_(where, c.request_at >= cutoff[0]["request_at"])
        for name in timings:
            ranks = await store.read(_percentiles(c[name], start, key, groups, where))
            found = {(int(r["start"] or 0), r["key"]): r for r in ranks}
            for row in rows:
                rank = found.get((row["start"], row["key"]), {})
                row[f"{name}_p50"], row[f"{name}_p95"] = rank.get("p50"), rank.get("p95")
    return rows


def _percentiles(
    value: ColumnElement[Any],
    start: ColumnElement[Any],
    key: ColumnElement[Any],
    groups: list[ColumnElement[Any]],
    where: ColumnElement[bool],
) -> Select[Any]:
    """p50 and p95 of `value` per group, by nearest rank (the value at rank ceil(q * n), as
    percentile_disc), with window functions both SQLite and PostgreSQL have: the database
    sorts, and only one row per group comes back."""
    partition = groups or None
    ranked = (
        select(
            start.label("start"),
            key.label("key"),
            value.label("v"),
            func.row_number().over(partition_by=partition, order_by=value).label("rn"),
            func.count().over(partition_by=partition).label("n"),
        )
        .where(where, value.is_not(None))
        .subquery()
    )

    def at(q: int) -> ColumnElement[Any]:
        # ceil(q% of n) in integer arithmetic, which both databases do alike.
        rank = (ranked.c.n * q + 99) // 100
        return func.max(case((ranked.c.rn == rank, ranked.c.v)))

    outer = [ranked.c.start, ranked.c.key]
    return select(*outer, at(50).label("p50"), at(95).label("p95")).group_by(*outer)


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
