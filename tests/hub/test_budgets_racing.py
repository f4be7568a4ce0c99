"""A key's spend cap holds across hub processes: 100 racing calls on a key whose monthly
budget is worth exactly 5 calls get exactly 5 answers, on PostgreSQL with four `serve`
workers and on SQLite with two, the ledger balanced and no hold left behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from examples.fake_provider import FakeProvider
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.budget_admin import Budgets
from hub.store.schema import api_keys
from tests.conftest import USER, LiveServer
from tests.hub.test_shared_holds import OUTPUT_RATE, PER_CALL, _books, _race, _serve
from tests.hub.test_workers import MODEL, _empty, _free_port, _running

pytestmark = pytest.mark.slow


async def _capped_key(db_url: str) -> tuple[str, str]:
    """A key capped at 5 calls a month, on an account whose balance covers 1,000."""
    store = SqlStore(db_url)
    await store.open()
    try:
        admin = Admin(store)
        key_id, key = await admin.create_key(USER)
        await admin.grant(USER, 1000 * PER_CALL)
        await admin.set_rate(MODEL, "chatCompletion", input_rate=0, output_rate=OUTPUT_RATE)
        await Budgets(store).set_key_budget(key_id, 5 * PER_CALL, "month")
        return key_id, key
    finally:
        await store.close()


async def _key_row(db_url: str, key_id: str) -> dict[str, int]:
    store = SqlStore(db_url)
    await store.open()
    try:
        [row] = await store.read(
            select(api_keys.c.held, api_keys.c.budget_spent).where(api_keys.c.id == key_id)
        )
        return {"held": int(row["held"]), "spent": int(row["budget_spent"])}
    finally:
        await store.close()


def test_racing_calls_on_a_key_capped_at_five_calls_get_five_answers(
    db_url: str, tmp_path: Path
) -> None:
    _empty(db_url)
    port = _free_port()
    fake = FakeProvider()
    fake.answer_delay = 0.05  # every answer is still running while the others race
    key_id, key = asyncio.run(_capped_key(db_url))
    with LiveServer(fake) as upstream:
        command = _serve(tmp_path, db_url, upstream.url, port)
        with _running(
            command, {"AIGNE_HUB_METRICS_DIR": str(tmp_path / "m")}, port, tmp_path / "log"
        ):
            answers = asyncio.run(_race(port, key, 100, concurrency=100))
        books = asyncio.run(_books(db_url))
    key_row = asyncio.run(_key_row(db_url, key_id))

    statuses = [a.status for a in answers]
    assert statuses.count(200) == 5 and statuses.count(402) == 95, statuses
    assert all(a.whole for a in answers if a.status == 200)
    assert key_row == {"held": 0, "spent": 5 * PER_CALL}  # the cap, not a unit past it
    assert books.metered == 5 * PER_CALL and books.meter_events == 5
    assert books.balance == books.granted - books.metered and books.held == 0
