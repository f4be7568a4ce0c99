"""Several worker processes: `serve --workers N` and the app factory under uvicorn, each on
a real socket, from an empty database; /metrics reports the whole server."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from examples.fake_provider import FakeProvider
from hub.metrics_shared import Directory
from hub.store import SqlStore
from hub.store.admin import Admin
from middleware.money import to_units
from tests.conftest import USER, LiveServer
from tests.hub.test_store import _drop_everything

pytestmark = pytest.mark.slow

MODEL = "fake/gpt-4o-mini"
CALLS = 40
ROUNDS = 5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _config(tmp_path: Path, db_url: str, upstream: str) -> Path:
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[database]\nurl = "{db_url}"\nsqlite_synchronous = "NORMAL"\n'
        f'[session]\nsecret = "workers-test"\n'
        f'[security]\nencryption_key_file = "{tmp_path / "hub.key"}"\n'
        f'[providers.fake]\nbase_url = "{upstream}/v1"\napi_key = "sk-fake-0123456789"\n'
        'models = ["gpt-4o-mini"]\n'
    )
    return config


@contextmanager
def _running(
    command: list[str], env: dict[str, str], port: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The command in a process group of its own, until it answers on the port; the
    whole group is stopped at the end, whatever happens. Its stderr goes to `log`."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 45
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the hub did not start in 45 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass  # the test killed the group itself
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


async def _grant_key(db_url: str, model: str = MODEL) -> str:
    """Alice's key, 5 credits, and `model` priced."""
    store = SqlStore(db_url)
    await store.open()
    try:
        admin = Admin(store)
        _, key = await admin.create_key(USER)
        await admin.grant(USER, to_units(5))
        await admin.set_rate(model, "chatCompletion", input_rate=10_000, output_rate=20_000)
        return key
    finally:
        await store.close()


async def _calls(port: int, key: str, count: int) -> list[int]:
    # A connection per call, so the calls spread over the workers (a kept-alive connection
    # stays with the worker that accepted it).
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
    ) as client:
        gate = asyncio.Semaphore(8)

        async def one() -> int:
            async with gate:
                answer = await client.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                )
                return answer.status_code

        return list(await asyncio.gather(*(one() for _ in range(count))))


def _scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"connection": "close"}).text


def _calls_counted(text: str) -> int:
    found = re.findall(r'^aigne_hub_calls_total\{.*status="success"\} (\d+)$', text, re.M)
    return sum(int(n) for n in found)


def _calls_per_worker(metrics_dir: Path, into: Path) -> dict[str, int]:
    """Each worker's own count of answered calls, read from its file alone."""
    counts: dict[str, int] = {}
    for path in sorted(metrics_dir.glob("worker-*")):
        alone = into / path.stem
        alone.mkdir(parents=True)
        shutil.copy(path, alone / path.name)
        counts[path.name.split("-")[1]] = sum(
            int(value)
            for (name, _, _), value, _ in Directory(str(alone)).cells()
            if name == "aigne_hub_calls_total"
        )
    return counts


def _empty(db_url: str) -> None:
    asyncio.run(_drop_everything(db_url))


def test_serve_with_two_workers_spreads_calls_and_reports_the_whole_server(
    db_url: str, tmp_path: Path
) -> None:
    _empty(db_url)  # both workers start on an empty database, migrating it together
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    with LiveServer(FakeProvider()) as upstream:
        config = _config(tmp_path, db_url, upstream.url)
        command = [sys.executable, "-m", "hub.cli", "serve", "--config", str(config)]
        command += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
        env = {"AIGNE_HUB_METRICS_DIR": str(metrics_dir)}
        with _running(command, env, port, tmp_path / "serve.log") as hub:
            key = asyncio.run(_grant_key(db_url))
            # The kernel hands connections to whichever worker accepts first: on a busy
            # machine one worker can take a whole round, so send rounds until both answered
            # (bounded), and count what was sent.
            statuses: list[int] = []
            for round_number in range(ROUNDS):
                statuses += asyncio.run(_calls(port, key, CALLS))
                per_worker = _calls_per_worker(metrics_dir, tmp_path / f"round-{round_number}")
                if len(per_worker) == 2 and all(count > 0 for count in per_worker.values()):
                    break
            # A call is counted just after its answer went out: wait for the last ones.
            deadline = time.monotonic() + 10
            while _calls_counted(_scrape(port)) < len(statuses) and time.monotonic() < deadline:
                time.sleep(0.05)
            scrapes = [_scrape(port) for _ in range(10)]
            per_worker = _calls_per_worker(metrics_dir, tmp_path / "final")
            children = subprocess.run(
                ["pgrep", "-P", str(hub.pid)], capture_output=True, text=True, check=False
            ).stdout.split()

    sent = len(statuses)
    assert statuses == [200] * sent
    # Two worker processes of this server answered calls (its other child is
    # multiprocessing's resource tracker), and each scrape, whichever worker answered it,
    # counts them all.
    assert len(per_worker) == 2 and set(per_worker) <= set(children)
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert sum(per_worker.values()) == sent
    assert [_calls_counted(text) for text in scrapes] == [sent] * 10


def test_the_factory_loads_under_uvicorn_from_the_environment(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    port = _free_port()
    with LiveServer(FakeProvider()) as upstream:
        config = _config(tmp_path, db_url, upstream.url)
        command = [sys.executable, "-m", "uvicorn", "--factory", "hub.app:from_environment"]
        command += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
        env = {
            "AIGNE_HUB_CONFIG": str(config),
            "AIGNE_HUB_METRICS_DIR": str(tmp_path / "metrics"),
        }
        with _running(command, env, port, tmp_path / "uvicorn.log"):
            key = asyncio.run(_grant_key(db_url))
            statuses = asyncio.run(_calls(port, key, 10))
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")

    assert statuses == [200] * 10
    assert _calls_counted(scraped.text) == 10
    # The hub's own lines are logged as under `serve`: ready, and one per call.
    log = (tmp_path / "uvicorn.log").read_text()
    assert "AIGNE Hub ready" in log
    assert log.count("aigne_hub.calls") == 10
