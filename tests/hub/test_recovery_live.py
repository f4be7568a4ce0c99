"""Crash recovery with real processes: two `aigne-hub serve` on one database; one is killed
with SIGKILL while a call streams through it, and the other settles that call in time."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest

from examples.fake_provider import FakeProvider
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.instances import HUB_CRASHED
from tests.conftest import USER, LiveServer
from tests.hub.test_workers import _config, _empty, _free_port, _grant_key, _running

pytestmark = pytest.mark.slow

MODEL = "fake/stall-model"  # the fake sends one chunk, then waits a minute
INPUT_RATE = 10_000  # what _grant_key prices the model at
TIMEOUT = 2.0


def _serving(config: Path, port: int, log: Path) -> AbstractContextManager[Popen[bytes]]:
    """`aigne-hub serve` in a process group of its own, stopped at the end whatever happens."""
    command = [sys.executable, "-m", "hub.cli", "serve", "--config", str(config)]
    command += ["--port", str(port), "--log-level", "warning"]
    return _running(command, {}, port, log)


async def _kill_in_flight(db_url: str, port: int, key: str, victim: int) -> dict[str, Any]:
    """A stream through the victim; once its record is `processing`, SIGKILL the victim's
    group; the record and the seconds the other hub took to settle it."""
    store = SqlStore(db_url)
    await store.open()
    admin = Admin(store)
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}

    async def stream() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            try:
                async with client.stream(
                    "POST",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json=body,
                ) as answer:
                    async for _ in answer.aiter_bytes():
                        pass
            except httpx.HTTPError:
                pass  # the hub died under it

    client = asyncio.create_task(stream())
    try:
        deadline = time.monotonic() + 20
        while not (calls := await admin.list_calls(limit=10)):
            assert time.monotonic() < deadline, "the call was never recorded"
            await asyncio.sleep(0.05)
        [call] = calls
        assert call["status"] == "processing"
        await asyncio.sleep(0.3)  # the first chunk is on its way: the provider has the prompt
        os.killpg(victim, signal.SIGKILL)
        killed = time.monotonic()
        while (record := (await admin.list_calls(limit=10))[0])["status"] == "processing":
            assert time.monotonic() - killed < TIMEOUT + 10, "not settled in time"
            await asyncio.sleep(0.1)
        record["settled_after"] = time.monotonic() - killed
        record["ledger"] = await admin.ledger(USER)
        return record
    finally:
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)
        await store.close()


def test_a_killed_hubs_call_is_settled_by_the_other_within_the_timeout(
    db_url: str, tmp_path: Path
) -> None:
    _empty(db_url)
    ports = _free_port(), _free_port()
    with LiveServer(FakeProvider()) as upstream:
        config = _config(tmp_path, db_url, upstream.url)
        with config.open("a") as more:
            more.write(f"[limits]\ninstance_timeout = {TIMEOUT}\n")
        with _serving(config, ports[0], tmp_path / "survivor.log"):
            key = asyncio.run(_grant_key(db_url, MODEL))
            with _serving(config, ports[1], tmp_path / "victim.log") as victim:
                record = asyncio.run(_kill_in_flight(db_url, ports[1], key, victim.pid))

    assert (record["status"], record["error_code"]) == ("failed", HUB_CRASHED)
    assert record["settled_after"] < TIMEOUT + 10
    assert record["usage_estimated"] is True and record["output_tokens"] == 0
    # Charged for the prompt as the credit check counted it, at the input rate.
    assert record["input_tokens"] > 0
    assert record["credits"] == record["input_tokens"] * INPUT_RATE
    ledger = record["ledger"]
    assert ledger["metered"] == record["credits"]
    assert ledger["balance"] == ledger["granted"] - ledger["metered"]
