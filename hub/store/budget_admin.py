"""Setting and showing spend caps: what `aigne-hub budgets`, the admin and user APIs and
the keys page do to them (the admission that enforces them is in hub.store.budgets)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, cast, func, null, select

from hub.store.budgets import period_end, period_start
from hub.store.raw import Exec, Fetch, Operation, Prepared
from hub.store.schema import accounts, api_keys, model_calls
from hub.store.sql import SqlStore

# The raw columns a listing selects; `shown_budget` turns them into what is shown.
RAW = ("budget", "budget_period", "budget_start", "budget_spent")


def budget_columns(table: Table) -> list[Any]:
    """A listing's columns of the table's cap, for `shown_budget`."""
    return [table.c[name] for name in RAW]


def shown_budget(row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The row's cap as shown: `budget` (units, None: no cap), `period`, `spent` this
    period (units) and `resets_at` (epoch seconds; None for a cap for life or no cap)."""
    moment = time.time() if now is None else now
    budget, period, start, spent = (row.pop(name) for name in RAW)
    current = period is not None and start is not None and start >= period_start(period, moment)
    row["budget"] = None if budget is None else int(budget)
    row["period"] = period
    row["spent"] = int(spent) if budget is not None and current else 0
    row["resets_at"] = None if period is None else period_end(period, moment)
    return row


class Budgets:
    """Set, clear and read the caps of keys and accounts."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._ops = {table.name: _CapStatements(table, store) for table in (api_keys, accounts)}

    async def set_key_budget(
        self, key_id: str, budget: int | None, period: str | None, now: float | None = None
    ) -> bool:
        """Cap a key's spending at `budget` units per `period` (None: no cap); False if
        there is no such key."""
        return await self._set(api_keys, key_id, budget, period, now)

    async def set_account_budget(
        self, account_id: int, budget: int | None, period: str | None, now: float | None = None
    ) -> bool:
        """Cap an account's spending, all its keys and sessions together."""
        return await self._set(accounts, account_id, budget, period, now)

    async def _set(
        self, table: Table, owner: Any, budget: int | None, period: str | None, now: float | None
    ) -> bool:
        ops = self._ops[table.name]
        moment = time.time() if now is None else now

        def op() -> Operation[bool]:
            # The rows locked first: a settle of this owner's calls (whose meter trigger takes
            # the account's row) is committed before the sum below, or waits for this
            # transaction and then counts itself: none is missed and none counts twice.
            yield Fetch(ops.lock_account, {"p_id": owner})
            if (yield Fetch(ops.lock, {"p_id": owner})) is None:
                return False
            if budget is None or period is None:
                yield Exec(ops.clear, {"p_id": owner})
                return True
            start = period_start(period, moment)
            # A cap set mid-period counts what the period has already spent.
            row = yield Fetch(ops.spent_since, {"p_id": owner, "p_start": start})
            values = {"p_id": owner, "p_budget": budget, "p_period": period, "p_start": start}
            yield Exec(ops.set, {**values, "p_spent": int(row[0])})
            return True

        changed = await self.store.run(op)
        self.store.forget_caches()
        return changed

    async def key_budget(self, key_id: str, now: float | None = None) -> dict[str, Any] | None:
        """A key's cap as shown (see shown_budget), with its owner's DID; None: no key."""
        rows = await self.store.query(
            select(api_keys.c.id, accounts.c.did.label("user_did"), *budget_columns(api_keys))
            .select_from(api_keys.join(accounts, api_keys.c.account_id == accounts.c.id))
            .where(api_keys.c.id == key_id)
        )
        return shown_budget(rows[0], now) if rows else None

    async def account_budget(self, did: str, now: float | None = None) -> dict[str, Any] | None:
        rows = await self.store.query(
            select(accounts.c.did.label("user_did"), *budget_columns(accounts)).where(
                accounts.c.did == did
            )
        )
        return shown_budget(rows[0], now) if rows else None


class _CapStatements:
    def __init__(self, table: Table, store: SqlStore) -> None:
        c = table.c
        owner = c.id == bindparam("p_id")
        m = model_calls.c
        charged_to = m.api_key_id if table is api_keys else m.account_id

        def prep(statement: Any) -> Prepared:
            return Prepared(statement, store.dialect)

        # The account's row first (for a key, its owner's), then the key's: the order of
        # the admission and of the settle's triggers.
        account = (
            accounts.c.id == select(api_keys.c.account_id).where(owner).scalar_subquery()
            if table is api_keys
            else accounts.c.id == bindparam("p_id")
        )
        self.lock_account = prep(select(accounts.c.id).where(account).with_for_update())
        self.lock = prep(select(c.id).where(owner).with_for_update())
        # PostgreSQL sums bigints as numeric: cast back, so money stays an integer of units.
        self.spent_since = prep(
            select(cast(func.coalesce(func.sum(m.credits), 0), BigInteger)).where(
                charged_to == bindparam("p_id"),
                m.request_at >= bindparam("p_start"),
                m.status != "processing",
            )
        )
        self.set = prep(
            table.update()
            .where(owner)
            .values(
                budget=bindparam("p_budget"),
                budget_period=bindparam("p_period"),
                budget_start=bindparam("p_start"),
                budget_spent=bindparam("p_spent"),
            )
        )
        self.clear = prep(
            table.update()
            .where(owner)
            .values(budget=null(), budget_period=null(), budget_start=null(), budget_spent=0)
        )
