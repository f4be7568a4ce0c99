"""Crash recovery: hub instances register and beat; the calls a dead one left in flight are
settled by a live one, once, charged for their prompt. The clock is the test's own."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from unittest.mock import patch

import httpx
import pytest
import respx

from hub.cli import main
from hub.settings import Limits
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.instances import HUB_CRASHED, UNOWNED_AFTER, Instances, _Statements
from hub.store.schema import model_calls
from middleware.call import Call, Identity, Usage, new_call_id
from middleware.credit import held_prompt_tokens
from middleware.money import to_units
from tests.conftest import USER, make_settings, start_hub
from tests.hub.test_proxy import completion

MODEL = "fake/gpt-4o-mini"
INPUT_RATE = 10_000
TIMEOUT = 30.0

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _store(db_url: str) -> SqlStore:
    store = SqlStore(db_url, sqlite_synchronous="NORMAL")
    await store.open()
    return store


@pytest.fixture
async def stores(db_url: str) -> AsyncIterator[list[SqlStore]]:
    """Three stores on one database, as three hub processes have; the first set up."""
    opened = [await _store(db_url) for _ in range(3)]
    admin = Admin(opened[0])
    await admin.grant(USER, to_units(5))
    await admin.set_rate(MODEL, "chatCompletion", input_rate=INPUT_RATE, output_rate=20_000)
    yield opened
    for store in opened:
        await store.close()


async def _instance(store: SqlStore, clock: Clock) -> Instances:
    instance = Instances(store, timeout=TIMEOUT, clock=clock)
    # Who it is, as start() takes it, without the beating task: the test beats by hand.
    instance.id, instance.host, instance.pid = new_call_id(), "test", os.getpid()
    await instance.register()
    return instance


async def _open(store: SqlStore, text: str) -> Call:
    account = await Admin(store).ensure_account(USER)
    raw = b'{"model":"%s","messages":[{"role":"user","content":"%s"}]}' % (
        MODEL.encode(),
        text.encode(),
    )
    call = Call(
        identity=Identity(account, USER),
        call_type="chatCompletion",
        model=MODEL,
        body={},
        raw_body=raw,
    )
    call.prompt_estimate = held_prompt_tokens(call)  # as the credit check counts it
    await store.open_call(call)
    return call


async def _calls(store: SqlStore) -> dict[str, dict[str, object]]:
    return {c["id"]: c for c in await Admin(store).list_calls(limit=1000)}


async def _balanced(store: SqlStore) -> dict[str, int]:
    ledger = await Admin(store).ledger(USER)
    assert ledger["balance"] == ledger["granted"] - ledger["metered"]
    return ledger


def _prompt_charge(call: Call) -> int:
    # The credit check's count of the prompt: its bytes over four, plus one.
    return (len(call.raw_body) // 4 + 1) * INPUT_RATE


async def test_a_dead_instances_calls_are_settled_failed_and_charged_for_their_prompt(
    stores: list[SqlStore],
) -> None:
    clock = Clock()
    await _instance(stores[0], clock)
    live = await _instance(stores[1], clock)
    short, long = await _open(stores[0], "hi"), await _open(stores[0], "x" * 4000)
    mine = await _open(stores[1], "a call of the live instance")

    clock.now += TIMEOUT - 1  # not yet: the dead one may only be slow
    await live.beat()
    assert await live.recover() == 0

    clock.now += 2
    await live.beat()
    assert await live.recover() == 2

    calls = await _calls(stores[2])
    for call in (short, long):
        record = calls[call.id]
        assert (record["status"], record["error_code"]) == ("failed", HUB_CRASHED)
        assert record["input_tokens"] == len(call.raw_body) // 4 + 1
        assert record["output_tokens"] == 0 and record["usage_estimated"] is True
        assert record["credits"] == _prompt_charge(call)
        assert "charged for its prompt" in str(record["error_message"])
    assert calls[mine.id]["status"] == "processing"
    ledger = await _balanced(stores[2])
    assert ledger["metered"] == _prompt_charge(short) + _prompt_charge(long)
    assert [row["id"] for row in await live.listing()] == [live.id]


async def test_a_late_settle_from_an_instance_taken_for_dead_charges_nothing_more(
    stores: list[SqlStore], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    stalled, live = await _instance(stores[0], clock), await _instance(stores[1], clock)
    call = await _open(stores[0], "hello")
    clock.now += TIMEOUT + 1
    assert await live.recover() == 1
    before = await _balanced(stores[2])

    # The stalled instance goes on: its settle of the same call finds it settled.
    call.status, call.usage, call.charge = "success", Usage(10, 500), to_units("0.5")
    call.http_status = 200
    await stores[0].settle(call)
    with caplog.at_level(logging.WARNING, "aigne_hub.instances"):
        await stalled.beat()

    record = (await _calls(stores[2]))[call.id]
    assert (record["status"], record["error_code"]) == ("failed", HUB_CRASHED)
    assert await _balanced(stores[2]) == before
    assert len(await Admin(stores[2]).list_meter_events(USER)) == 1
    # It said so, and registered again, so its next calls are covered.
    assert "was taken for dead" in caplog.text
    assert {row["id"] for row in await live.listing()} == {stalled.id, live.id}


async def test_two_live_instances_recover_a_dead_one_once(stores: list[SqlStore]) -> None:
    clock = Clock()
    dead = await _instance(stores[0], clock)
    opened = [await _open(stores[0], f"call {n}") for n in range(20)]
    first, second = await _instance(stores[1], clock), await _instance(stores[2], clock)
    clock.now += TIMEOUT + 1

    counts = await asyncio.gather(first.recover(), second.recover())

    assert sorted(counts) == [0, 20]
    ledger = await _balanced(stores[2])
    assert ledger["metered"] == sum(_prompt_charge(call) for call in opened)
    assert len(await Admin(stores[2]).list_meter_events(USER, limit=100)) == 20
    assert dead.id not in {row["id"] for row in await first.listing()}


async def test_the_next_start_settles_what_a_killed_hub_left(db_url: str) -> None:
    clock = Clock()
    store = await _store(db_url)
    await Admin(store).grant(USER, to_units(5))
    await Admin(store).set_rate(MODEL, "chatCompletion", input_rate=INPUT_RATE, output_rate=1)
    killed = await _instance(store, clock)
    call = await _open(store, "in flight when the hub was killed")
    await store.close()  # no deregistering: as kill -9 leaves it
    assert killed.id

    clock.now += TIMEOUT + 1
    store = await _store(db_url)
    try:
        restarted = Instances(store, timeout=TIMEOUT, clock=clock)
        await restarted.start()
        record = (await _calls(store))[call.id]
        await restarted.stop()
        assert (record["status"], record["error_code"]) == ("failed", HUB_CRASHED)
        assert record["credits"] == _prompt_charge(call)
        # A clean stop leaves no row behind.
        assert await restarted.listing() == []
    finally:
        await store.close()


async def test_calls_no_live_instance_owns_are_settled_after_the_timeout(
    stores: list[SqlStore],
) -> None:
    clock = Clock()
    stopped, live = await _instance(stores[0], clock), await _instance(stores[1], clock)
    left = await _open(stores[0], "its settle failed before a clean stop")
    await stopped.deregister()
    stores[0].instance_id = None  # calls opened before migration 10 had no instance
    old, recent = await _open(stores[0], "old"), await _open(stores[0], "recent")
    await stores[0].execute(
        model_calls.update()
        .where(model_calls.c.id == old.id)
        .values(request_at=clock.now - UNOWNED_AFTER - 60)
    )

    assert await live.recover() == 1  # the old unowned call only: the rest may be running
    clock.now += TIMEOUT + 1
    assert await live.recover() == 1

    calls = await _calls(stores[2])
    assert calls[left.id]["error_code"] == HUB_CRASHED
    assert calls[left.id]["credits"] == _prompt_charge(left)
    assert calls[old.id]["error_code"] == HUB_CRASHED
    assert calls[recent.id]["status"] == "processing"  # may still be running elsewhere
    await _balanced(stores[2])


async def test_a_self_hosted_hub_charges_nothing_for_crashed_calls(stores: list[SqlStore]) -> None:
    clock = Clock()
    await _instance(stores[0], clock)
    call = await _open(stores[0], "free")
    live = Instances(stores[1], timeout=TIMEOUT, clock=clock, billing=False)
    clock.now += TIMEOUT + 1
    assert await live.recover() == 1
    record = (await _calls(stores[2]))[call.id]
    assert record["error_code"] == HUB_CRASHED and record["credits"] == 0
    assert (await _balanced(stores[2]))["metered"] == 0


def test_instances_list_shows_each_process_its_heartbeat_and_calls_in_flight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    clock = Clock()

    async def two_instances() -> tuple[str, str]:
        store = await _store(db_url)
        try:
            quiet, busy = await _instance(store, clock), await _instance(store, clock)
            await _open(store, "in flight")  # the store records calls for the last one
            clock.now += TIMEOUT + 1
            await busy.beat()
            return quiet.id, busy.id
        finally:
            await store.close()

    quiet, busy = asyncio.run(two_instances())
    config = tmp_path / "hub.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    with patch("time.time", clock):
        assert main(["instances", "list", "--json", "--config", str(config)]) == 0
    listed = {row["id"]: row for row in json.loads(capsys.readouterr().out)}

    assert listed.keys() == {quiet, busy}
    assert (listed[quiet]["alive"], listed[quiet]["calls_in_flight"]) == (False, 0)
    assert (listed[busy]["alive"], listed[busy]["calls_in_flight"]) == (True, 1)
    assert listed[busy]["pid"] == os.getpid()


async def test_a_hub_registers_at_start_marks_its_calls_beats_and_leaves_at_shutdown(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion())
    limits = Limits(key_cache_seconds=0.2, balance_cache_seconds=0.2, instance_timeout=0.3)
    hub = await start_hub(
        make_settings(db_url, limits=limits), httpx.MockTransport(mock_upstream.async_handler)
    )
    try:
        instances = hub.app.instances
        assert (await hub.chat()).status_code == 200
        [record] = await hub.calls()
        assert record["instance_id"] == instances.id
        assert record["prompt_estimate"] > 0  # counted by the credit check, kept by the record
        [row] = await instances.listing()
        first_beat = row["beat_at"]
        await asyncio.sleep(0.35)  # a beat every 0.1 s
        [row] = await instances.listing()
        assert row["id"] == instances.id and row["beat_at"] > first_beat and row["alive"]
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()
    store = await _store(db_url)
    try:
        assert await Instances(store).listing() == []
    finally:
        await store.close()


async def test_the_recovery_reads_only_calls_in_flight(tmp_path: Path) -> None:
    # A scan runs every few seconds in every process: it must read the partial index of
    # `processing` calls, never the whole history of calls.
    path = tmp_path / "hub.db"
    store = await _store(f"sqlite:///{path}")
    statements = _Statements(store)
    await store.close()
    with closing(sqlite3.connect(path)) as db:
        for prepared in (statements.calls_of, statements.orphans, statements.listing):
            plan = db.execute(f"EXPLAIN QUERY PLAN {prepared.sql}", [None] * len(prepared.order))
            assert "USING INDEX ix_model_calls_processing" in str(plan.fetchall()), prepared.sql
