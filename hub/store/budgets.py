"""Spend caps per key and per account: calendar periods, and the SQL that admits a call
against a cap in the statement that holds its credit.

A cap lives on its owner's row (`api_keys`, `accounts`): `budget` (units), `budget_period`
(day, week, month: UTC calendar periods; life: never resets), and what the period has
spent, `budget_spent`, counted from `budget_start`. No job resets a period: the admission
that first sees a later period than `budget_start` moves it on and counts from zero, in
the statement that takes the call's hold. A settle adds its charge to `budget_spent` (the
triggers of migration 14) only if the call was admitted in the row's current period, so a
call from the previous period that ends after the turn never counts in the new one.

What a call is checked against is what the period has spent plus what calls in flight
hold (`held`), below the cap: the rule of the balance check, in the same atomic step, so
racing calls and several processes cannot pass it by more than one call's real cost
beyond its hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Table, bindparam, case, or_, select

from hub.store.raw import Prepared
from hub.store.schema import accounts, api_keys
from middleware.ports import BudgetExceeded, InsufficientCredit

PERIODS = ("day", "week", "month", "life")


def period_start(period: str, now: float) -> float:
    """The epoch second the period containing `now` began (UTC); 0 for `life`."""
    if period == "life":
        return 0.0
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":  # ISO weeks: from Monday
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    elif period != "day":
        raise ValueError(f"unknown budget period {period!r}")
    return day.timestamp()


def period_end(period: str, now: float) -> float | None:
    """When the period containing `now` ends and the cap is whole again; None for `life`."""
    if period == "life":
        return None
    start = datetime.fromtimestamp(period_start(period, now), UTC)
    if period == "day":
        return (start + timedelta(days=1)).timestamp()
    if period == "week":
        return (start + timedelta(days=7)).timestamp()
    following = start.replace(year=start.year + 1, month=1) if start.month == 12 else None
    return (following or start.replace(month=start.month + 1)).timestamp()


def period_values(now: float) -> dict[str, float]:
    """The bind values the admission statements need: each period's start at `now`."""
    return {f"p_{p}_start": period_start(p, now) for p in PERIODS if p != "life"}


# -- the expressions shared by the admission statements ---------------------------------


def _current_start(table: Table) -> ColumnElement[Any]:
    """The start of the row's period at the call's time (NULL: no cap)."""
    c = table.c
    return case(
        *(
            (c.budget_period == p, bindparam(f"p_{p}_start", type_=Float))
            for p in PERIODS
            if p != "life"
        ),
        (c.budget_period == "life", 0.0),
    )


def _turned(table: Table) -> ColumnElement[Any]:
    # Only forward: a host whose clock lags cannot take a period back.
    return _current_start(table) > table.c.budget_start


def spent_now(table: Table) -> ColumnElement[Any]:
    """What the row's current period has spent (zero once the period has turned)."""
    return case((_turned(table), 0), else_=table.c.budget_spent)


def start_now(table: Table) -> ColumnElement[Any]:
    return case((_turned(table), _current_start(table)), else_=table.c.budget_start)


def within_budget(table: Table) -> ColumnElement[Any]:
    """No cap, or the period's spend and the holds of calls in flight are below it."""
    c = table.c
    return or_(c.budget.is_(None), spent_now(table) + c.held < c.budget)


def turn_period(table: Table) -> dict[str, Any]:
    """SET clauses that move a row whose period has turned on to the new one."""
    return {"budget_spent": spent_now(table), "budget_start": start_now(table)}


class BudgetStatements:
    """The key's side of an admission (the account's is in Statements.hold_credit)."""

    def __init__(self, dialect: Any) -> None:
        k = api_keys.c
        key = k.id == bindparam("p_api_key_id")
        self.hold_key = Prepared(
            api_keys.update()
            .where(key, within_budget(api_keys))
            .values(held=k.held + bindparam("p_key_held"), **turn_period(api_keys)),
            dialect,
        )
        # Gives back the account's hold taken in this transaction when the key's cap refused.
        a = accounts.c
        self.unhold_credit = Prepared(
            accounts.update()
            .where(a.id == bindparam("p_account_id"))
            .values(held=a.held - bindparam("p_held")),
            dialect,
        )
        self.key_state = Prepared(_state(api_keys, key), dialect)
        self.account_state = Prepared(
            _state(accounts, accounts.c.id == bindparam("p_account_id"), accounts.c.balance),
            dialect,
        )


def _state(table: Table, where: ColumnElement[bool], *more: Any) -> Any:
    c = table.c
    return select(c.budget, c.budget_period, spent_now(table).label("spent"), c.held, *more).where(
        where
    )


def budget_refusal(scope: str, row: tuple[Any, ...], now: float) -> BudgetExceeded:
    """The refusal of a call by a cap, from its owner's state read after the admission
    refused it (in the same transaction, a moment later)."""
    budget, period, spent, held = int(row[0]), str(row[1]), int(row[2]), int(row[3])
    return BudgetExceeded(scope, budget, period, spent, held, period_end(period, now))


def account_refusal(row: tuple[Any, ...] | None, now: float) -> Exception:
    """Why the account's side of an admission refused a call: its balance, less what is
    held, is at or below zero (InsufficientCredit); else its cap (BudgetExceeded)."""
    if row is None:
        return InsufficientCredit(0, 0)
    balance, held = int(row[4]), int(row[3])
    if balance - held > 0 and row[0] is not None:
        return budget_refusal("account", row, now)
    return InsufficientCredit(balance, held)
