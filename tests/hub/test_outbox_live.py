"""The outbox end to end: two `aigne-hub serve` processes on one database, a webhook sink
that fails one delivery in three (half of those after applying it), answers slowly and so
receives events twice; the dispatcher's instance is killed with SIGKILL midway. The sink,
de-duplicating by the event id, ends with the ledger's sums per account."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import AbstractContextManager
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from examples.fake_provider import FakeProvider
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.outbox import OutboxStore
from middleware.money import to_units
from tests.conftest import USER, LiveServer
from tests.hub.test_workers import MODEL, _config, _empty, _free_port, _running

pytestmark = pytest.mark.slow

BOB = "did:abt:bob"
SECRET_BYTES = b"live-outbox-test-secret-32-bytes"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
# On PostgreSQL, 2,000 calls; on SQLite (the same path, one writer for both processes),
# fewer, to keep the suite's time.
CALLS = {"postgres": 2000, "sqlite": 300}
LEASE = 2.0


class FlakySink:
    """A webhook receiver that applies each event once by its id, checks its signature,
    and misbehaves: slow answers, one in three failing (half of them after applying)."""

    def __init__(self, seed: int = 7) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.applied: dict[str, dict[str, Any]] = {}
        self.received: Counter[str] = Counter()
        self.bad_signatures = 0
        self.conflicts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                done = kind == "lifespan.shutdown"
                await send({"type": kind + ".complete"})
                if done:
                    return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender died mid-request (the kill): nothing arrived whole
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = self._apply(dict(scope["headers"]), body)
        await asyncio.sleep(self.random.uniform(0.005, 0.04))  # slow, and varied
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def _apply(self, headers: dict[bytes, bytes], body: bytes) -> int:
        msg_id = headers[b"webhook-id"].decode()
        stamp = headers[b"webhook-timestamp"].decode()
        signed = f"{msg_id}.{stamp}.".encode() + body
        digest = hmac.new(SECRET_BYTES, signed, hashlib.sha256).digest()
        with self.lock:
            if headers[b"webhook-signature"].decode() != "v1," + base64.b64encode(digest).decode():
                self.bad_signatures += 1
                return 401
            self.received[msg_id] += 1
            roll = self.random.random()
            if roll < 1 / 6:
                return 503  # failed before applying
            event = self.applied.setdefault(msg_id, json.loads(body))  # once per id
            self.conflicts += event != json.loads(body)  # a retry carries the same event
            return 500 if roll < 1 / 3 else 200  # failed after applying: it comes again

    def sums(self) -> dict[tuple[str, str], int]:
        totals: defaultdict[tuple[str, str], int] = defaultdict(int)
        for event in self.applied.values():
            totals[(event["account"], event["type"])] += int(event["units"])
        return dict(totals)


def _serving(config: Path, port: int, log: Path) -> AbstractContextManager[Popen[bytes]]:
    command = [sys.executable, "-m", "hub.cli", "serve", "--config", str(config)]
    command += ["--port", str(port), "--log-level", "warning"]
    return _running(command, {"OUTBOX_TEST_SECRET": SECRET}, port, log)


async def _keys(db_url: str) -> list[str]:
    store = SqlStore(db_url)
    await store.open()
    try:
        admin = Admin(store)
        keys = []
        for did in (USER, BOB):
            keys.append((await admin.create_key(did))[1])
            await admin.grant(did, to_units(50))
        await admin.set_rate(MODEL, "chatCompletion", input_rate=10_000, output_rate=20_000)
        return keys
    finally:
        await store.close()


async def _calls(port: int, keys: list[str], count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        gate = asyncio.Semaphore(16)

        async def one(n: int) -> int:
            async with gate:
                answer = await client.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {keys[n % 2]}"},
                    json={"model": MODEL, "messages": [{"role": "user", "content": f"hi {n % 7}"}]},
                )
                return answer.status_code

        return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _holder_pid(admin: Admin) -> int | None:
    """The pid of the instance holding the dispatcher's lease, once one holds it."""
    holder, expires = await OutboxStore(admin.store).lease_holder()
    if not holder or expires < time.time():
        return None
    pid = await admin.store.database.fetch_val(
        "SELECT pid FROM hub_instances WHERE id = :id", {"id": holder}
    )
    return None if pid is None else int(pid)


async def _ledger(admin: Admin) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for did in (USER, BOB):
        ledger = await admin.ledger(did)
        totals[(did, "meter_event")] = ledger["metered"]
        totals[(did, "grant")] = ledger["granted"]
    return totals


async def _run(
    db_url: str, ports: tuple[int, int], victim: Popen[bytes], calls: int
) -> dict[str, Any]:
    store = SqlStore(db_url)
    await store.open()
    admin = Admin(store)
    try:
        deadline = time.monotonic() + 20
        while (await _holder_pid(admin)) != victim.pid:
            assert time.monotonic() < deadline, "the first hub never took the lease"
            await asyncio.sleep(0.1)
        keys = await _keys(db_url)
        statuses = await _calls(ports[1], keys, calls // 2)
        await admin.grant(USER, to_units(3), "midway")
        os.killpg(victim.pid, signal.SIGKILL)  # the dispatcher dies, deliveries in flight
        statuses += await _calls(ports[1], keys, calls - calls // 2)
        await admin.grant(BOB, to_units(2), "after the kill")
        deadline = time.monotonic() + 90
        while await OutboxStore(store).listing(everything=False, limit=1):
            assert time.monotonic() < deadline, "the outbox was not drained"
            await asyncio.sleep(0.2)
        url = f"http://127.0.0.1:{ports[1]}/metrics"
        async with httpx.AsyncClient() as client:
            while 'aigne_hub_outbox_pending{sink="billing"} 0' not in (
                metrics := (await client.get(url)).text
            ):
                assert time.monotonic() < deadline, "the survivor's /metrics never showed no lag"
                await asyncio.sleep(0.2)
        return {
            "metrics": metrics,
            "statuses": statuses,
            "ledger": await _ledger(admin),
            "holder": await _holder_pid(admin),
            "events": len(await OutboxStore(store).listing(everything=True, limit=10 * calls)),
        }
    finally:
        await store.close()


def test_the_sink_ends_with_the_ledger_after_a_flaky_sink_and_a_killed_dispatcher(
    db_url: str, tmp_path: Path
) -> None:
    _empty(db_url)
    calls = CALLS["sqlite" if db_url.startswith("sqlite") else "postgres"]
    ports = _free_port(), _free_port()
    sink = FlakySink()
    with LiveServer(FakeProvider()) as upstream, LiveServer(sink) as receiver:
        config = _config(tmp_path, db_url, upstream.url)
        with config.open("a") as more:
            more.write(
                f"[outbox]\nlease_seconds = {LEASE}\ntimeout = 1.0\npoll_seconds = 0.1\n"
                "retry_base_seconds = 0.05\nretry_max_seconds = 0.5\nconcurrency = 16\n"
                f'[[outbox.sinks]]\nname = "billing"\nkind = "webhook"\n'
                f'url = "{receiver.url}/hook"\nsecret_env = "OUTBOX_TEST_SECRET"\n'
            )
        with _serving(config, ports[0], tmp_path / "victim.log") as victim:
            with _serving(config, ports[1], tmp_path / "survivor.log") as survivor:
                result = asyncio.run(_run(db_url, ports, victim, calls))

    assert result["statuses"] == [200] * calls
    assert result["holder"] == survivor.pid  # the survivor took the lease over
    assert sink.bad_signatures == sink.conflicts == 0
    # Every ledger row applied once by its id; the sums per account are the ledger's.
    assert len(sink.applied) == result["events"] == calls + 4  # and 4 grants
    assert sink.sums() == result["ledger"]
    # ...though the sink saw many events more than once.
    assert sum(sink.received.values()) > len(sink.applied) * 1.2
    assert 'aigne_hub_outbox_failures_total{sink="billing"}' in result["metrics"]
