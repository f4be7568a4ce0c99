"""Spend caps in the store's admission (SQLite and PostgreSQL): a call is admitted only while
what its key's and account's periods have spent plus what calls in flight hold is below
each cap, in the step that holds its credit; periods turn at UTC calendar boundaries
without a job; a settle counts its charge in the period its call was admitted in."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.budget_admin import Budgets
from hub.store.budgets import period_end, period_start
from hub.store.schema import accounts, api_keys, model_calls
from middleware.call import Call, Identity, Usage
from middleware.ports import BudgetExceeded, InsufficientCredit
from tests.conftest import USER
from tests.hub.test_recovery import TIMEOUT, Clock, _instance, _store

pytestmark = pytest.mark.anyio

C = 1_000_000  # one call's hold and charge, in units
NOV_LAST = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC).timestamp()
DEC_FIRST = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC).timestamp()
DEC_MID = datetime(2026, 12, 15, 12, 0, tzinfo=UTC).timestamp()
JAN_FIRST = datetime(2027, 1, 1, tzinfo=UTC).timestamp()


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_periods_are_utc_calendar_periods() -> None:
    wednesday = utc(2026, 12, 2, 13, 5)
    assert period_start("day", wednesday) == utc(2026, 12, 2)
    assert period_end("day", wednesday) == utc(2026, 12, 3)
    assert period_start("week", wednesday) == utc(2026, 11, 30)  # Monday
    assert period_end("week", wednesday) == utc(2026, 12, 7)
    assert period_start("month", wednesday) == utc(2026, 12, 1)
    assert period_end("month", wednesday) == utc(2027, 1, 1)
    assert period_end("month", utc(2027, 1, 31, 23)) == utc(2027, 2, 1)
    assert period_start("life", wednesday) == 0 and period_end("life", wednesday) is None


async def _key(store: SqlStore, budget: int | None, period: str = "month", now: float = DEC_MID):
    admin = Admin(store)
    account = await admin.ensure_account(USER)
    await admin.grant(USER, 1000 * C)
    key_id, _ = await admin.create_key(USER)
    if budget is not None:
        await Budgets(store).set_key_budget(key_id, budget, period, now=now)
    return account, key_id


def _call(account: int, key_id: str | None, at: float, *, capped: bool = True) -> Call:
    identity = Identity(account_id=account, user_did=USER, key_id=key_id, budgeted=capped)
    call = Call(
        identity=identity,
        call_type="chatCompletion",
        model="mock/gpt-4o-mini",
        body={},
        raw_body=b"",
    )
    call.started_at = at
    call.hold = C
    return call


async def _settle(store: SqlStore, call: Call, charge: int = C) -> None:
    call.usage = Usage(input_tokens=10, output_tokens=5)
    call.charge = charge
    call.status = "success"
    call.http_status = 200
    await store.settle(call)


async def _row(store: SqlStore, table, where) -> dict:  # type: ignore[no-untyped-def]
    [row] = await store.query(select(table.c.held, table.c.budget_spent).where(where))
    return row


async def test_a_key_cap_admits_while_spent_and_held_are_below_it(store: SqlStore) -> None:
    account, key_id = await _key(store, 3 * C)
    calls = [_call(account, key_id, DEC_MID) for _ in range(3)]
    for call in calls:
        await store.open_call(call)

    with pytest.raises(BudgetExceeded) as refused:
        await store.open_call(_call(account, key_id, DEC_MID))
    assert refused.value.scope == "key" and refused.value.budget == 3 * C
    assert refused.value.period == "month"
    assert (refused.value.spent, refused.value.held) == (0, 3 * C)
    assert refused.value.resets_at == JAN_FIRST

    # Settled for less than held: room comes back, and only the real charge is spent.
    await _settle(store, calls[0], C // 2)
    await store.open_call(_call(account, key_id, DEC_MID))
    with pytest.raises(BudgetExceeded) as again:
        await store.open_call(_call(account, key_id, DEC_MID))
    assert (again.value.spent, again.value.held) == (C // 2, 3 * C)

    key_row = await _row(store, api_keys, api_keys.c.id == key_id)
    assert key_row == {"held": 3 * C, "budget_spent": C // 2}
    # A refused call wrote nothing and held nothing.
    rows = await store.query(select(model_calls.c.id))
    assert len(rows) == 4
    [acct] = await store.query(select(accounts.c.held).where(accounts.c.id == account))
    assert acct["held"] == 3 * C


async def test_settles_give_back_the_key_hold_and_keep_the_ledger(store: SqlStore) -> None:
    account, key_id = await _key(store, 10 * C)
    calls = [_call(account, key_id, DEC_MID) for _ in range(4)]
    for call in calls:
        await store.open_call(call)
    await asyncio.gather(*(_settle(store, c, C) for c in calls))
    await _settle(store, calls[0], C)  # a second settle changes nothing

    assert await _row(store, api_keys, api_keys.c.id == key_id) == {
        "held": 0,
        "budget_spent": 4 * C,
    }
    ledger = await Admin(store).ledger(USER)
    assert ledger["balance"] == ledger["granted"] - ledger["metered"] == 996 * C
    shown = await Budgets(store).key_budget(key_id, now=DEC_MID)
    assert shown is not None and (shown["budget"], shown["spent"]) == (10 * C, 4 * C)


async def test_an_account_cap_counts_every_key_and_session(store: SqlStore) -> None:
    account, key_id = await _key(store, None)
    await Budgets(store).set_account_budget(account, 2 * C, "day", now=DEC_MID)
    by_key = _call(account, key_id, DEC_MID, capped=False)
    by_session = _call(account, None, DEC_MID, capped=False)
    await store.open_call(by_key)
    await store.open_call(by_session)
    with pytest.raises(BudgetExceeded) as refused:
        await store.open_call(_call(account, key_id, DEC_MID, capped=False))
    assert refused.value.scope == "account" and refused.value.period == "day"
    assert refused.value.resets_at == utc(2026, 12, 16)

    await _settle(store, by_key)
    await _settle(store, by_session)
    assert await _row(store, accounts, accounts.c.id == account) == {
        "held": 0,
        "budget_spent": 2 * C,
    }
    # The next day the cap is whole again.
    await store.open_call(_call(account, key_id, utc(2026, 12, 16, 0, 0, 1), capped=False))


async def test_an_account_without_credit_gives_back_the_key_hold(store: SqlStore) -> None:
    admin = Admin(store)
    account = await admin.ensure_account(USER)
    key_id, _ = await admin.create_key(USER)
    await Budgets(store).set_key_budget(key_id, 5 * C, "week", now=DEC_MID)

    # The key's cap has room, the balance has none: the key's hold taken in the same
    # transaction is given back, and the refusal is the balance's.
    with pytest.raises(InsufficientCredit):
        await store.open_call(_call(account, key_id, DEC_MID))
    assert await _row(store, api_keys, api_keys.c.id == key_id) == {"held": 0, "budget_spent": 0}
    assert await store.query(select(model_calls.c.id)) == []


async def test_the_period_turns_without_a_job(store: SqlStore) -> None:
    account, key_id = await _key(store, 3 * C, now=NOV_LAST)
    spent = _call(account, key_id, NOV_LAST)
    await store.open_call(spent)
    await _settle(store, spent, 2 * C)
    late = _call(account, key_id, NOV_LAST)  # admitted in November, still running
    await store.open_call(late)
    with pytest.raises(BudgetExceeded):
        await store.open_call(_call(account, key_id, NOV_LAST))

    # December: November's spend no longer counts (calls in flight still hold).
    december = _call(account, key_id, DEC_FIRST)
    await store.open_call(december)
    # A November call that ends in December counts in November, not December.
    await _settle(store, late, C)
    budgets = Budgets(store)
    shown = await budgets.key_budget(key_id, now=DEC_FIRST)
    assert shown is not None and shown["spent"] == 0 and shown["resets_at"] == JAN_FIRST
    await _settle(store, december, C)
    shown = await budgets.key_budget(key_id, now=DEC_FIRST)
    assert shown is not None and shown["spent"] == C
    # Read in November's terms, as a lagging clock would: the period does not go back.
    await store.open_call(_call(account, key_id, NOV_LAST))
    shown = await budgets.key_budget(key_id, now=DEC_FIRST)
    assert shown is not None and shown["spent"] == C


async def test_a_cap_set_mid_period_counts_what_the_period_spent(store: SqlStore) -> None:
    account, key_id = await _key(store, None)
    earlier = _call(account, key_id, NOV_LAST, capped=False)
    this_month = [_call(account, key_id, DEC_FIRST, capped=False) for _ in range(2)]
    for call in (earlier, *this_month):
        await store.open_call(call)
        await _settle(store, call)

    await Budgets(store).set_key_budget(key_id, 3 * C, "month", now=DEC_MID)
    shown = await Budgets(store).key_budget(key_id, now=DEC_MID)
    assert shown is not None and shown["spent"] == 2 * C
    await store.open_call(_call(account, key_id, DEC_MID))
    with pytest.raises(BudgetExceeded):
        await store.open_call(_call(account, key_id, DEC_MID))

    # Cleared: no cap, nothing counted against one.
    await Budgets(store).set_key_budget(key_id, None, None, now=DEC_MID)
    await store.open_call(_call(account, key_id, DEC_MID))
    shown = await Budgets(store).key_budget(key_id, now=DEC_MID)
    assert shown is not None and shown["budget"] is None and shown["period"] is None


async def test_racing_admissions_pass_no_cap(store: SqlStore) -> None:
    account, key_id = await _key(store, 5 * C)
    racing = [_call(account, key_id, DEC_MID) for _ in range(40)]
    results = await asyncio.gather(*(store.open_call(c) for c in racing), return_exceptions=True)
    assert results.count(None) == 5
    assert all(isinstance(r, BudgetExceeded) for r in results if r is not None)


async def test_crash_recovery_gives_back_the_key_hold_and_counts_the_charge(db_url: str) -> None:
    dead, live = await _store(db_url), await _store(db_url)
    try:
        now = time.time()
        account, key_id = await _key(dead, 5 * C, now=now)
        await Admin(dead).set_rate(
            "mock/gpt-4o-mini", "chatCompletion", input_rate=10_000, output_rate=0
        )
        clock = Clock()
        await _instance(dead, clock)
        survivor = await _instance(live, clock)
        call = _call(account, key_id, now)
        call.prompt_estimate = 100  # what a crashed call is charged for: 100 × 10,000 units
        await dead.open_call(call)

        clock.now += TIMEOUT + 1
        await survivor.beat()
        assert await survivor.recover() == 1

        assert await _row(live, api_keys, api_keys.c.id == key_id) == {
            "held": 0,
            "budget_spent": C,
        }
        ledger = await Admin(live).ledger(USER)
        assert ledger["balance"] == ledger["granted"] - ledger["metered"]
    finally:
        await dead.close()
        await live.close()
