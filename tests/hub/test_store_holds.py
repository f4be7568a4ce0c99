"""Credit holds in the store: admission, hold and `processing` record are one step shared
by every connection to the database; whatever takes a call out of `processing` releases
its hold, once."""

from __future__ import annotations

import asyncio
import time

import pytest

from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.budgets import period_values
from hub.store.raw import Exec, Operation
from hub.store.schema import accounts, model_calls
from middleware.call import Call
from middleware.ports import InsufficientCredit
from tests.conftest import USER, empty_pg
from tests.hub.test_store import a_call

pytestmark = pytest.mark.anyio

HOLD = 1_000


async def _held(store: SqlStore, account: int) -> tuple[int, int]:
    [row] = await store.query(
        accounts.select()
        .with_only_columns(accounts.c.balance, accounts.c.held)
        .where(accounts.c.id == account)
    )
    return int(row["balance"]), int(row["held"])


def _holding(account: int, hold: int = HOLD) -> Call:
    call = a_call(account, 0)
    call.status = "processing"
    call.hold = hold
    return call


async def _account(store: SqlStore, balance: int) -> int:
    admin = Admin(store)
    account = await admin.ensure_account(USER)
    await admin.grant(USER, balance)
    return account


async def test_a_hold_lasts_until_the_settle_charges_the_call(store: SqlStore) -> None:
    account = await _account(store, 5 * HOLD)
    call = _holding(account)

    await store.open_call(call)
    assert await _held(store, account) == (5 * HOLD, HOLD)
    [row] = await store.query(model_calls.select().where(model_calls.c.id == call.id))
    assert row["status"] == "processing" and row["held"] == HOLD

    call.status, call.charge = "success", 300
    await store.settle(call)
    await store.settle(call)  # a second settle releases nothing more
    assert await _held(store, account) == (5 * HOLD - 300, 0)


async def test_a_refused_admission_records_and_holds_nothing(store: SqlStore) -> None:
    account = await _account(store, HOLD)
    first = _holding(account)
    await store.open_call(first)

    with pytest.raises(InsufficientCredit) as refused:
        await store.open_call(_holding(account))

    assert (refused.value.balance, refused.value.held) == (HOLD, HOLD)
    assert [r["id"] for r in await store.query(model_calls.select())] == [first.id]
    assert await _held(store, account) == (HOLD, HOLD)


async def test_two_stores_racing_admit_exactly_what_the_balance_covers(
    store: SqlStore, db_url: str
) -> None:
    # Two writer connections, as two processes have: 2 x 40 calls race for 5 holds.
    account = await _account(store, 5 * HOLD)
    other = SqlStore(db_url, sqlite_synchronous="NORMAL")
    await other.open()
    try:

        async def admit(on: SqlStore) -> bool:
            try:
                await on.open_call(_holding(account))
                return True
            except InsufficientCredit:
                return False

        admitted = await asyncio.gather(*(admit(s) for s in [store, other] * 40))
    finally:
        await other.close()

    assert admitted.count(True) == 5
    assert await _held(store, account) == (5 * HOLD, 5 * HOLD)


async def test_a_call_taken_out_of_processing_by_anyone_releases_its_hold(
    store: SqlStore,
) -> None:
    # Crash recovery settles a dead instance's calls with an UPDATE of its own, not through
    # settle(): the database releases the hold whatever moves the row out of `processing`.
    account = await _account(store, 5 * HOLD)
    await store.open_call(_holding(account))
    await store.open_call(_holding(account, 2 * HOLD))
    assert await _held(store, account) == (5 * HOLD, 3 * HOLD)

    await store.execute(
        model_calls.update()
        .where(model_calls.c.status == "processing")
        .values(status="failed", error_code="hub_crashed")
    )

    assert await _held(store, account) == (5 * HOLD, 0)


async def test_a_failing_neighbour_in_the_settle_batch_releases_the_hold_once(
    store: SqlStore,
) -> None:
    account = await _account(store, 5 * HOLD)
    call = _holding(account)
    await store.open_call(call)
    call.status, call.charge = "success", 300

    def broken() -> Operation[None]:
        values = {"p_account_id": account, "p_held": 1, **period_values(time.time())}
        yield Exec(store.sql.hold_credit, values)
        raise RuntimeError("boom")  # the batch fails; each of its writes is run again alone

    results = await asyncio.gather(store.settle(call), store.run(broken), return_exceptions=True)

    assert results[0] is None and isinstance(results[1], RuntimeError)
    assert await _held(store, account) == (5 * HOLD - 300, 0)


async def test_an_admission_survives_a_dropped_postgresql_connection(pg_database: str) -> None:
    import asyncpg

    await empty_pg(pg_database)
    store = SqlStore(pg_database)
    await store.open()
    try:
        account = await _account(store, 5 * HOLD)
        killer = await asyncpg.connect(pg_database)
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await killer.close()

        await store.open_call(_holding(account))  # run again on a new connection

        assert await _held(store, account) == (5 * HOLD, HOLD)
    finally:
        await store.close()
