"""Upstream connections the provider closed while idle, and keys that cannot be sent."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import live_hub

pytestmark = pytest.mark.anyio

BURSTS = 20
BURST_SIZE = 100


async def test_bursts_after_pauses_survive_a_provider_that_closes_idle_connections(
    tmp_path: Path,
) -> None:
    # A self-hosted provider behind uvicorn closes connections left idle for its keep-alive
    # timeout (1 s here). Bursts start 2 s apart and each answer takes 1 s, so the next
    # burst finds the pool's connections idle for about that long: the provider is closing
    # them as they are reused. None of those calls reached the provider: none may fail.
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    statuses: list[int] = []
    async with live_hub(db_url, ("fake/gpt-4o-mini",), upstream_keep_alive=1) as live:
        live.fake.answer_delay = 1.0
        # The test's own connections to the hub expire early: they must not go stale either.
        limits = httpx.Limits(
            max_connections=BURST_SIZE, max_keepalive_connections=BURST_SIZE, keepalive_expiry=0.5
        )
        async with httpx.AsyncClient(
            base_url=live.hub_url,
            timeout=30,
            limits=limits,
            headers={"authorization": f"Bearer {live.key}"},
        ) as client:

            async def one() -> None:
                body = {
                    "model": "fake/gpt-4o-mini",
                    "messages": [{"role": "user", "content": "hi"}],
                }
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)

            for _ in range(BURSTS):
                started = time.monotonic()
                async with anyio.create_task_group() as group:
                    for _ in range(BURST_SIZE):
                        group.start_soon(one)
                await anyio.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
            scraped = (await client.get("/metrics")).text
    assert len(statuses) == BURSTS * BURST_SIZE
    failed = [s for s in statuses if s != 200]
    assert failed == [], f"{len(failed)} calls failed: {sorted(set(failed))}"
    # Each was sent again on a new connection, and the operator can see how often.
    retried = [line for line in scraped.splitlines() if line.startswith("aigne_hub_upstream_stale")]
    assert retried and int(retried[0].split()[-1]) > 0
