"""How long the dashboard's overview and the usage API take over many calls.

    python bench/usage.py [--calls 120000] [--days 28] [--database URL]

Fills a fresh database (SQLite in a temporary directory by default; a PostgreSQL URL
must name an empty database) with synthetic calls spread over the last `--days` days,
then times the overview for each window and the usage API, each as a ratio to the floor:
one `SELECT sum(credits)` over the same calls (a single pass over their rows), the least
any figure over them can cost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from hub.app import create_app
from hub.settings import Settings
from hub.store.admin import Admin
from hub.store.schema import model_calls

ADMIN = "did:abt:bench-admin"


def synthetic_calls(count: int, days: float, account_id: int) -> list[dict[str, Any]]:
    now = time.time()
    rng = random.Random(7)
    rows = []
    for i in range(count):
        at = now - rng.random() * days * 86400
        rows.append(
            {
                "id": f"bench-{i}",
                "account_id": account_id,
                "user_did": f"did:abt:user-{i % 50}",
                "app_did": f"app-{i % 5}",
                "provider": "fake",
                "model": f"fake/model-{i % 7}",
                "type": "chatCompletion",
                "status": "failed" if i % 20 == 0 else "success",
                "stream": bool(i % 2),
                "request_at": at,
                "response_at": at + 1,
                "duration_ms": rng.randint(5, 900),
                "ttfb_ms": rng.randint(1, 300),
                "input_tokens": rng.randint(5, 500),
                "output_tokens": rng.randint(5, 900),
                "credits": rng.randint(1, 10**6),
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "image_count": 0,
                "usage_estimated": False,
                "attempts": 1,
            }
        )
    return rows


async def timed(client: httpx.AsyncClient, path: str, rounds: int) -> float:
    """Median seconds of `rounds` requests (after one warm-up)."""
    await client.get(path)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = await client.get(path)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(samples)


async def main(calls: int, days: float, url: str | None, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = url or f"sqlite:///{Path(folder) / 'usage.db'}"
        app = create_app(Settings(database_url=database, session_secret="bench"))
        await app.startup()
        admin = Admin(app.store)
        account_id = await admin.ensure_account(ADMIN, is_admin=True)
        _, key = await admin.create_key(ADMIN, name="bench")
        rows = synthetic_calls(calls, days, account_id)
        for start in range(0, len(rows), 1000):  # asyncpg takes at most 32767 parameters
            await app.store.execute(model_calls.insert().values(rows[start : start + 1000]))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            headers={"authorization": f"Bearer {key}"},
            timeout=120,
        )
        print(f"{calls:,} calls over {days:g} days on {database.split(':')[0]}")
        print(f"{'what':34} {'median':>9} {'vs floor':>9}")
        for window, span in (("24h", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400)):
            since = time.time() - span
            floor_query = select(func.sum(model_calls.c.credits)).where(
                model_calls.c.request_at >= since
            )
            started = time.perf_counter()
            for _ in range(rounds):
                await app.store.read(floor_query)
            floor = (time.perf_counter() - started) / rounds
            for label, path in (
                (f"overview {window}", f"/dashboard?window={window}"),
                (f"usage API {window} by model/day", f"/api/admin/usage?by=model&since={since}"),
            ):
                seconds = await timed(client, path, rounds)
                print(f"{label:34} {seconds * 1000:7.0f} ms {seconds / floor:8.1f}x")
            print(f"{'floor: sum(credits) ' + window:34} {floor * 1000:7.0f} ms")
        await client.aclose()
        await app.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=120_000)
    parser.add_argument("--days", type=float, default=28)
    parser.add_argument("--database", help="an empty database to fill (default: SQLite)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.days, args.database, args.rounds))
