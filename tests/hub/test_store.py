"""The store: settle is applied once, the balance always equals the ledger."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import anyio
import httpx
import pytest
import respx

from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.raw import Exec, Operation
from middleware.call import Call, Identity, Usage
from middleware.money import to_units
from tests.conftest import USER, Hub, empty_pg
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio


def a_call(account_id: int, charge: int) -> Call:
    call = Call(
        identity=Identity(account_id=account_id, user_did=USER),
        call_type="chatCompletion",
        model="mock/gpt-4o-mini",
        body={},
        raw_body=b"",
    )
    call.usage = Usage(input_tokens=10, output_tokens=5)
    call.charge = charge
    call.status = "success"
    call.http_status = 200
    return call


async def test_settle_applies_once_even_if_invoked_twice(store: SqlStore) -> None:
    admin = Admin(store)
    account = await admin.ensure_account(USER)
    await admin.grant(USER, to_units(1))
    call = a_call(account, to_units("0.25"))
    call.status = "processing"
    await store.open_call(call)
    call.status = "success"

    await asyncio.gather(store.settle(call), store.settle(call))
    await store.settle(call)

    ledger = await admin.ledger(USER)
    assert ledger == {
        "balance": to_units("0.75"),
        "granted": to_units(1),
        "metered": to_units("0.25"),
    }


async def test_settle_without_its_open_row_still_records_and_charges(store: SqlStore) -> None:
    admin = Admin(store)
    account = await admin.ensure_account(USER)
    call = a_call(account, 42)

    await store.settle(call)

    [row] = await admin.list_calls()
    assert row["status"] == "success" and row["credits"] == 42
    assert (await admin.ledger(USER))["balance"] == -42


async def test_a_failing_operation_does_not_fail_its_batch_neighbours(store: SqlStore) -> None:
    admin = Admin(store)
    await admin.ensure_account(USER)

    def broken() -> Operation[None]:
        # Writes, then fails: its write must be rolled back, its neighbours' kept.
        yield Exec(
            store.sql.insert_grant, {"p_id": 1, "p_amount": 999, "p_note": None, "p_now": 0.0}
        )
        raise RuntimeError("boom")

    results = await asyncio.gather(
        admin.grant(USER, 5), store.run(broken), admin.grant(USER, 7), return_exceptions=True
    )

    assert isinstance(results[1], RuntimeError)
    assert await admin.ledger(USER) == {"balance": 12, "granted": 12, "metered": 0}


async def test_queued_writes_are_committed_before_close(db_url: str) -> None:
    store = SqlStore(db_url, sqlite_synchronous="NORMAL")
    await store.open()
    account = await Admin(store).ensure_account(USER)
    calls = [a_call(account, 0) for _ in range(50)]
    for call in calls:
        call.status = "processing"
        asyncio.ensure_future(store.open_call(call))  # not awaited
    await asyncio.sleep(0)  # each has queued its write
    await store.close()

    reopened = SqlStore(db_url)
    await reopened.open()
    try:
        assert len(await Admin(reopened).list_calls(limit=100)) == 50
    finally:
        await reopened.close()


async def test_migrations_are_idempotent(db_url: str) -> None:
    for _ in range(2):
        store = SqlStore(db_url)
        await store.open()
        await store.close()


async def test_balance_equals_ledger_after_200_concurrent_calls(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.005)  # keep many calls in flight at once
        return httpx.Response(200, json=completion(13, 7))

    mock_upstream.post("/chat/completions").mock(side_effect=answer)

    responses = await asyncio.gather(*(hub.chat() for _ in range(200)))

    assert [r.status_code for r in responses] == [200] * 200
    calls = await hub.calls()
    assert len(calls) == 200 and {c["status"] for c in calls} == {"success"}
    per_call = 13 * 10_000 + 7 * 20_000
    ledger = await hub.admin.ledger(USER)
    assert ledger["metered"] == 200 * per_call == sum(c["credits"] for c in calls)
    assert ledger["balance"] == ledger["granted"] - ledger["metered"]


async def test_another_process_holding_the_sqlite_lock_does_not_freeze_the_hub(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    store = SqlStore(url, sqlite_synchronous="NORMAL")
    await store.open()
    admin = Admin(store)
    await admin.ensure_account(USER)
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell mid-transaction
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        grant = asyncio.ensure_future(admin.grant(USER, 5))
        await anyio.sleep(0.5)
        assert not grant.done()  # waiting for the lock...
        other.execute("COMMIT")
        assert await grant == 5  # ...and done once it is free
        group.cancel_scope.cancel()
    other.close()
    await store.close()

    assert max(gaps) < 0.25  # the event loop kept serving meanwhile


async def test_a_dropped_postgresql_connection_is_replaced(pg_database: str) -> None:
    import asyncpg

    await empty_pg(pg_database)
    store = SqlStore(pg_database)
    await store.open()
    admin = Admin(store)
    await admin.grant(USER, 5)
    killer = await asyncpg.connect(pg_database)
    await killer.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    await killer.close()

    assert await admin.grant(USER, 7) == 12
    await store.close()


async def test_a_version_1_database_is_upgraded_in_place(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.store import migrate

    if db_url.startswith("postgresql"):  # the session's database is past version 1: empty it
        import asyncpg

        conn = await asyncpg.connect(db_url)
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        await conn.close()
    monkeypatch.setattr(migrate, "MIGRATIONS", migrate.MIGRATIONS[:1])
    monkeypatch.setattr(migrate, "LATEST", 1)
    old = SqlStore(db_url)
    await old.open(upgrade=True)  # a hub of schema version 1...
    # Written as a version-1 hub wrote them: today's statements know later columns.
    await old.database.execute(
        f"INSERT INTO accounts (did, is_admin, balance, created_at) VALUES ('{USER}', false, 0, 1)"
    )
    account = await old.database.fetch_val(f"SELECT id FROM accounts WHERE did = '{USER}'")
    await old.database.execute(
        "INSERT INTO model_calls (id, account_id, user_did, model, type, status, stream, "
        "request_at, input_tokens, output_tokens, cached_tokens, image_count, credits) "
        f"VALUES ('old-call', {account}, 'did:x', 'm', 'chatCompletion', 'success', false, "
        "1, 1, 1, 0, 0, 5)"
    )
    await old.close()
    monkeypatch.undo()

    store = SqlStore(db_url)  # ...and today's hub on the same database
    await store.open()
    [call] = await Admin(store).list_calls()
    version = await migrate.current_version(store.database, store.dialect)
    await store.close()

    assert version == migrate.LATEST >= 2
    assert call["id"] == "old-call" and call["usage_estimated"] is False


async def test_a_settle_whose_caller_is_cancelled_is_still_committed(store: SqlStore) -> None:
    admin = Admin(store)
    account = await admin.ensure_account(USER)
    call = a_call(account, 77)
    call.status = "processing"
    await store.open_call(call)
    call.status = "success"

    task = asyncio.ensure_future(store.settle(call))
    await asyncio.sleep(0)  # the settle has started and is waiting for its commit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.run(lambda: _nothing())  # everything queued before is committed now

    assert (await admin.ledger(USER))["metered"] == 77


def _nothing() -> Operation[None]:
    return None
    yield  # a generator that runs no statement


async def test_a_cancelled_reader_does_not_cancel_others_waiting_for_the_same_rates(
    store: SqlStore,
) -> None:
    await Admin(store).set_rate("m", "chatCompletion", input_rate=1, output_rate=2)
    store.forget_caches()

    first = asyncio.ensure_future(store.rate("m", "chatCompletion"))
    second = asyncio.ensure_future(store.rate("m", "chatCompletion"))
    await asyncio.sleep(0)  # both are waiting on the one reload
    first.cancel()  # as when its client hangs up

    rate = await second
    assert rate is not None and rate.output_rate == 2
    assert first.cancelled()


async def test_a_rate_set_elsewhere_counts_within_a_second_not_a_cache_period(
    store: SqlStore, db_url: str
) -> None:
    assert store.rate_cache_seconds >= 5
    assert await store.rate("late/model", "chatCompletion") is None  # cached: no such rate
    elsewhere = SqlStore(db_url)  # the CLI, or another instance of the hub
    await elsewhere.open()
    try:
        await Admin(elsewhere).set_rate("late/model", "chatCompletion", input_rate=1, output_rate=2)
    finally:
        await elsewhere.close()

    await anyio.sleep(1.1)
    rate = await store.rate("late/model", "chatCompletion")
    assert rate is not None and rate.output_rate == 2


def _open_and_close_at(url: str, start_at: float) -> str:
    """In a process of its own: open the store (migrating it) at one moment, with others."""

    async def go() -> None:
        store = SqlStore(url)
        await anyio.sleep(max(0.0, start_at - time.time()))
        await store.open()
        await store.close()

    try:
        asyncio.run(go())
    except Exception:
        import traceback

        return traceback.format_exc()
    return "ok"


def test_workers_starting_together_on_an_empty_database_all_start(db_url: str) -> None:
    # `serve --workers N` starts N processes at once, each migrating on start: one applies
    # the schema, the others wait for it rather than fail ("database is locked" on SQLite).
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    asyncio.run(_drop_everything(db_url))
    start_at = time.time() + 1.5  # after every process has imported the hub
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        outcomes = list(pool.map(_open_and_close_at, [db_url] * 4, [start_at] * 4, timeout=60))

    assert outcomes == ["ok"] * 4


async def _drop_everything(url: str) -> None:
    """An empty database: no tables, not even the schema version."""
    if url.startswith("sqlite"):
        return  # a fresh file per test
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
