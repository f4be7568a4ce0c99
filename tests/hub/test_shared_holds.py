"""Credit holds shared by every worker: several `serve` workers on one database admit exactly
what one would, bill every answer once, and a worker killed mid-call loses no charge of an
answer a client received in full (SQLite with two workers, PostgreSQL with four)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from examples.fake_provider import REPLY, FakeProvider
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.schema import accounts, credit_grants, meter_events, model_calls
from tests.conftest import USER, LiveServer
from tests.hub.test_workers import MODEL, _config, _empty, _free_port, _running

pytestmark = pytest.mark.slow

# The fake answers every chat with this many tokens; a call asking for exactly as many, at
# a rate for output only, costs exactly its hold, so "a balance covering N calls" is exact.
OUTPUT = len(REPLY.split())
OUTPUT_RATE = 1_000_000
PER_CALL = OUTPUT * OUTPUT_RATE


def _workers(db_url: str) -> int:
    return 2 if db_url.startswith("sqlite") else 4


async def _setup(db_url: str, balance: int) -> str:
    store = SqlStore(db_url)
    await store.open()
    try:
        admin = Admin(store)
        _, key = await admin.create_key(USER)
        await admin.grant(USER, balance)
        await admin.set_rate(MODEL, "chatCompletion", input_rate=0, output_rate=OUTPUT_RATE)
        return key
    finally:
        await store.close()


@dataclass
class Answer:
    status: int  # 0: the connection failed (its worker was killed)
    request_id: str | None
    whole: bool  # the client received the answer in full


async def _race(port: int, key: str, count: int, *, concurrency: int = 64) -> list[Answer]:
    """`count` calls, every other one a stream, `concurrency` at a time, each on a
    connection of its own so they spread over the workers."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
    ) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int) -> Answer:
            stream = n % 2 == 1
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": OUTPUT,
                "stream": stream,
            }
            headers = {"authorization": f"Bearer {key}"}
            async with gate:
                try:
                    answer = await client.post("/v1/chat/completions", headers=headers, json=body)
                except httpx.HTTPError:
                    return Answer(0, None, False)
            whole = answer.status_code == 200 and (
                answer.text.endswith("data: [DONE]\n\n") if stream else _is_json(answer.text)
            )
            return Answer(answer.status_code, answer.headers.get("x-request-id"), whole)

        return list(await asyncio.gather(*(one(n) for n in range(count))))


def _is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text).get("choices"), list)
    except ValueError:
        return False


@dataclass
class Books:
    balance: int
    held: int
    granted: int
    metered: int
    meter_events: int
    processing_held: int
    calls: dict[str, tuple[str, int, bool]]  # request id: (status, credits, metered)


async def _books(db_url: str) -> Books:
    store = SqlStore(db_url)
    await store.open()
    try:
        [account] = await store.read(select(accounts.c.balance, accounts.c.held))
        [granted] = await store.read(select(func.sum(credit_grants.c.amount).label("s")))
        [metered] = await store.read(
            select(func.sum(meter_events.c.amount).label("s"), func.count().label("n"))
        )
        [processing] = await store.read(
            select(func.sum(model_calls.c.held).label("s")).where(
                model_calls.c.status == "processing"
            )
        )
        rows = await store.read(
            select(
                model_calls.c.request_id,
                model_calls.c.status,
                model_calls.c.credits,
                meter_events.c.id.label("event"),
            ).select_from(
                model_calls.outerjoin(meter_events, meter_events.c.call_id == model_calls.c.id)
            )
        )
        return Books(
            balance=int(account["balance"]),
            held=int(account["held"]),
            granted=int(granted["s"] or 0),
            metered=int(metered["s"] or 0),
            meter_events=int(metered["n"]),
            processing_held=int(processing["s"] or 0),
            calls={
                r["request_id"]: (r["status"], int(r["credits"]), r["event"] is not None)
                for r in rows
            },
        )
    finally:
        await store.close()


def _serve(tmp_path: Path, db_url: str, upstream: str, port: int) -> list[str]:
    config = _config(tmp_path, db_url, upstream)
    command = [sys.executable, "-m", "hub.cli", "serve", "--config", str(config)]
    return command + ["--port", str(port), "--workers", str(_workers(db_url))]


def test_racing_calls_on_a_balance_for_five_get_exactly_five_answers(
    db_url: str, tmp_path: Path
) -> None:
    _empty(db_url)
    port = _free_port()
    fake = FakeProvider()
    fake.answer_delay = 0.05  # every answer is still running while the others race
    with LiveServer(fake) as upstream:
        command = _serve(tmp_path, db_url, upstream.url, port)
        with _running(
            command, {"AIGNE_HUB_METRICS_DIR": str(tmp_path / "m")}, port, tmp_path / "log"
        ):
            key = asyncio.run(_setup(db_url, 5 * PER_CALL))
            answers = asyncio.run(_race(port, key, 200, concurrency=200))
        books = asyncio.run(_books(db_url))

    statuses = [a.status for a in answers]
    assert statuses.count(200) == 5 and statuses.count(402) == 195, statuses
    assert books.balance == 0 and books.held == 0  # no overdraft, no hold left
    assert books.balance == books.granted - books.metered
    assert len(books.calls) == 5 and books.meter_events == 5


def test_thousands_of_racing_calls_are_each_billed_once(db_url: str, tmp_path: Path) -> None:
    _empty(db_url)
    port = _free_port()
    count = 2000
    with LiveServer(FakeProvider()) as upstream:
        command = _serve(tmp_path, db_url, upstream.url, port)
        with _running(
            command, {"AIGNE_HUB_METRICS_DIR": str(tmp_path / "m")}, port, tmp_path / "log"
        ):
            key = asyncio.run(_setup(db_url, 10 * count * PER_CALL))
            started = time.monotonic()
            answers = asyncio.run(_race(port, key, count))
            took = time.monotonic() - started
        books = asyncio.run(_books(db_url))

    assert [a.status for a in answers] == [200] * count, took
    assert all(a.whole for a in answers)
    billed = [books.calls[a.request_id or ""] for a in answers]
    assert billed == [("success", PER_CALL, True)] * count
    assert books.meter_events == count and books.metered == count * PER_CALL
    assert books.balance == books.granted - books.metered
    assert books.held == 0 and books.processing_held == 0


def test_a_worker_killed_mid_call_loses_no_charge_of_a_whole_answer(
    db_url: str, tmp_path: Path
) -> None:
    _empty(db_url)
    port = _free_port()
    fake = FakeProvider()
    fake.answer_delay = 0.1
    with LiveServer(fake) as upstream:
        command = _serve(tmp_path, db_url, upstream.url, port)
        env = {"AIGNE_HUB_METRICS_DIR": str(tmp_path / "m")}
        with _running(command, env, port, tmp_path / "log") as hub:
            key = asyncio.run(_setup(db_url, 10_000 * PER_CALL))

            async def race_and_kill() -> list[Answer]:
                racing = asyncio.ensure_future(_race(port, key, 600, concurrency=32))
                for _ in range(2):  # kill -9 a worker twice while calls run
                    await asyncio.sleep(0.8)
                    workers = subprocess.run(
                        ["pgrep", "-f", "-P", str(hub.pid), "spawn_main"],
                        capture_output=True,
                        text=True,
                        check=False,
                    ).stdout.split()
                    assert workers, "no worker to kill"
                    os.kill(int(workers[0]), signal.SIGKILL)
                return await racing

            answers = asyncio.run(race_and_kill())
        books = asyncio.run(_books(db_url))

    whole = [a for a in answers if a.whole]
    assert 0 < len(whole) < len(answers), "the kills cut no call short"
    # Every answer a client received in full is recorded, charged and in the ledger.
    for answer in whole:
        assert books.calls.get(answer.request_id or "") == ("success", PER_CALL, True)
    # Every answer that got as far as a status has a record.
    assert all(a.request_id in books.calls for a in answers if a.status == 200)
    assert books.balance == books.granted - books.metered
    # The killed workers' calls still hold their credit (crash recovery releases it).
    assert books.held == books.processing_held
