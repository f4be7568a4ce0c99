"""Usage added up by the database: exact sums over every call of a window, and nearest-rank
percentiles (as percentile_disc), the same on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from hub.analytics import Window, totals, usage
from hub.store import SqlStore
from hub.store import usage as usage_store
from hub.store.admin import Admin
from middleware.call import Call, Identity, Usage
from tests.conftest import USER

pytestmark = pytest.mark.anyio


async def record(
    store: SqlStore, model: str, duration_ms: int, at: float, failed: bool = False
) -> None:
    account_id = await Admin(store).ensure_account(USER)
    call = Call(
        identity=Identity(account_id=account_id, user_did=USER),
        call_type="chatCompletion",
        model=model,
        body={},
        raw_body=b"",
        started_at=at,
    )
    call.started_clock = 0.0  # from zero, the milliseconds come out whole
    call.ended_clock = duration_ms / 1000
    call.first_byte_clock = duration_ms / 2000
    call.usage, call.charge = Usage(3, 1), 7
    call.status = "failed" if failed else "success"
    await store.open_call(call)
    await store.settle(call)


async def test_percentiles_are_nearest_rank_and_sums_exact(store: SqlStore) -> None:
    now = time.time()
    for i in range(1, 21):  # 10, 20, ..., 200 ms
        await record(store, "a/m", i * 10, now - i, failed=i % 5 == 0)
    await record(store, "b/m", 999, now - 1)

    whole = await totals(store, Window(since=now - 3600))
    by_model = {e["model"]: e for e in await usage(store, Window(since=now - 3600), None, "model")}

    assert (whole["calls"], whole["errors"], whole["input_tokens"]) == (21, 4, 63)
    assert whole["credits"] == "0.0000000147"  # 21 x 7 units, exactly
    a = by_model["a/m"]
    # Ranks ceil(0.5 x 20) = 10 and ceil(0.95 x 20) = 19 of the sorted durations.
    assert a["latency_ms"] == {"p50": 100, "p95": 190}
    assert a["ttfb_ms"] == {"p50": 50, "p95": 95}
    assert by_model["b/m"]["latency_ms"] == {"p50": 999, "p95": 999}


async def test_past_the_timed_limit_percentiles_rank_the_latest_calls(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_store, "TIMED_CALLS", 3)
    now = time.time()
    for age, duration in ((50, 1000), (40, 1000), (3, 10), (2, 20), (1, 30)):
        await record(store, "a/m", duration, now - age)

    whole = await totals(store, Window(since=now - 3600))

    assert whole["calls"] == 5  # counts and sums still cover every call
    assert whole["latency_ms"] == {"p50": 20, "p95": 30}  # the latest three only


async def test_time_slots_split_a_window_and_hold_every_call(store: SqlStore) -> None:
    hour = 3600
    start = (time.time() // hour - 5) * hour
    for offset in (10, 20, hour + 10, 3 * hour + 10):
        await record(store, "a/m", 10, start + offset)

    slots = await usage(store, Window(since=start), hour, None)

    assert [(e["start"] - start, e["calls"]) for e in slots] == [
        (0, 2),
        (hour, 1),
        (3 * hour, 1),
    ]


async def test_the_usage_api_says_when_percentiles_were_sampled(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    from hub import usage_api
    from tests.conftest import make_settings, start_hub

    now = time.time()
    for age in (3, 2, 1):
        await record(store, "a/m", 10, now - age)
    hub = await start_hub(make_settings(db_url), None)
    try:
        whole = (await hub.client.get("/api/user/usage", params={"by": "total"})).json()
        monkeypatch.setattr(usage_api, "TIMED_CALLS", 2)
        monkeypatch.setattr(usage_store, "TIMED_CALLS", 2)
        cut = (await hub.client.get("/api/user/usage", params={"by": "total"})).json()
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    assert whole["percentiles_sampled"] is False and cut["percentiles_sampled"] is True
    assert sum(e["calls"] for e in cut["data"]) == 3  # the counts are still whole
