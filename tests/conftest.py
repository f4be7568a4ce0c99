"""Shared fixtures: databases (SQLite and PostgreSQL), a hub wired to a mock or live upstream."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx
import uvicorn
from cryptography.fernet import Fernet

from examples.fake_provider import FakeProvider
from hub.app import HubApp, create_app
from hub.settings import Limits, ProviderSettings, Settings
from hub.store import SqlStore
from hub.store.admin import Admin
from middleware.money import to_units

PG_ADMIN_URL = os.environ.get("AIGNE_HUB_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
UPSTREAM = "http://upstream.test/v1"
PROVIDER_KEY = "sk-provider-secret-0123456789"
USER = "did:abt:alice"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, dropped at the end."""
    if not _pg_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 and CI is set")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432 (runs in CI)")
    import asyncpg

    name = f"aigne_hub_test_{uuid.uuid4().hex[:10]}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield f"{base}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store-backed test runs on SQLite and on PostgreSQL (emptied between tests)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(empty_pg(url))
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    """An open store on the test's database (SQLite and PostgreSQL)."""
    opened = SqlStore(db_url, sqlite_synchronous="NORMAL")
    await opened.open()
    yield opened
    await opened.close()


async def empty_pg(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname='public' "
            "AND tablename <> 'schema_version'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


def make_settings(
    db_url: str,
    *,
    provider: str = "mock",
    base_url: str = UPSTREAM,
    kind: str = "openai",
    more_providers: tuple[ProviderSettings, ...] = (),
    **changes: Any,
) -> Settings:
    """Settings for a hub with one provider (by default `mock`, OpenAI-compatible, at UPSTREAM)."""
    upstream = ProviderSettings(provider, kind, base_url, (PROVIDER_KEY,), ("gpt-4o-mini",))
    limits = Limits(key_cache_seconds=0.2, balance_cache_seconds=0.2)
    base = Settings(
        database_url=db_url,
        providers={provider: upstream, **{p.name: p for p in more_providers}},
        limits=limits,
        sqlite_synchronous="NORMAL",
        session_secret="test-secret",
        # A key of the test's own: the default key file would land in the working directory.
        encryption_key=Fernet.generate_key().decode(),
    )
    return replace(base, **changes)


class Hub:
    """A started hub app with an admin on its store, a user key, and an httpx client."""

    def __init__(self, app: HubApp, key: str) -> None:
        self.app = app
        self.store = app.store
        self.admin = Admin(app.store)
        self.key = key
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://hub.test",
            headers={"authorization": f"Bearer {key}"},
        )

    async def chat(self, model: str = "mock/gpt-4o-mini", **body: Any) -> httpx.Response:
        body.setdefault("messages", [{"role": "user", "content": "Say hi"}])
        return await self.client.post("/v1/chat/completions", json={"model": model, **body})

    async def calls(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.admin.list_calls(limit=1000, **filters)


async def start_hub(settings: Settings, transport: httpx.AsyncBaseTransport | None) -> Hub:
    app = create_app(settings, transport=transport)
    await app.startup()
    admin = Admin(app.store)
    _, key = await admin.create_key(USER, name="test")
    await admin.grant(USER, to_units(10), "test grant")
    await admin.set_rate(
        "mock/gpt-4o-mini",
        "chatCompletion",
        input_rate=to_units("0.000001"),
        output_rate=to_units("0.000002"),
    )
    return Hub(app, key)


@pytest.fixture
def mock_upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def hub(db_url: str, mock_upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    """A hub on each database, its upstream mocked with respx."""
    started = await start_hub(
        make_settings(db_url), httpx.MockTransport(mock_upstream.async_handler)
    )
    yield started
    await started.client.aclose()
    await started.app.shutdown()


class LiveServer:
    """An ASGI app served by a real uvicorn on 127.0.0.1, in a thread of its own."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **config
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class Live:
    """A hub and the example fake provider, each under real uvicorn, and a store on the
    same database to set up and inspect what the hub (in its own thread) writes."""

    def __init__(self, hub_url: str, key: str, fake: FakeProvider, admin: Admin) -> None:
        self.hub_url = hub_url
        self.key = key
        self.fake = fake
        self.admin = admin

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.hub_url, timeout=30, headers={"authorization": f"Bearer {self.key}"}
        )

    async def calls(self) -> list[dict[str, Any]]:
        return await self.admin.list_calls(limit=100)

    async def wait_for_call(self, **expected: Any) -> dict[str, Any]:
        """Poll the database until a call matches (the hub writes from another thread)."""
        deadline = time.monotonic() + 10
        while True:
            calls = await self.calls()
            for call in calls:
                if all(call[k] == v for k, v in expected.items()):
                    return call
            if time.monotonic() > deadline:
                raise AssertionError(f"no call matching {expected}; calls: {calls}")
            await anyio.sleep(0.05)

    async def wait_for_calls(self, count: int) -> list[dict[str, Any]]:
        """Poll the database until `count` calls are settled."""
        deadline = time.monotonic() + 10
        while True:
            calls = await self.calls()
            settled = [c for c in calls if c["status"] != "processing"]
            if len(settled) >= count:
                return settled
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} settled calls; calls: {calls}")
            await anyio.sleep(0.05)


@asynccontextmanager
async def live_hub(
    db_url: str,
    models: tuple[str, ...],
    *,
    rates: tuple[int, int] = (10_000, 20_000),
    settings_for: Callable[[str], Settings] | None = None,
    upstream_keep_alive: int = 5,
) -> AsyncIterator[Live]:
    """A user with a key and 5 credits, the models priced, the fake provider and the hub
    in front of it (by default as provider `fake`; `settings_for(upstream_url)` to vary).
    The fake closes connections idle for `upstream_keep_alive` seconds (uvicorn's default 5)."""
    store = SqlStore(db_url)
    await store.open()
    admin = Admin(store)
    _, key = await admin.create_key(USER)
    await admin.grant(USER, to_units(5))
    for model in models:
        await admin.set_rate(model, "chatCompletion", input_rate=rates[0], output_rate=rates[1])
    fake = FakeProvider()
    try:
        with LiveServer(fake, timeout_keep_alive=upstream_keep_alive) as upstream:
            settings = (
                settings_for(upstream.url)
                if settings_for is not None
                else make_settings(db_url, provider="fake", base_url=upstream.url + "/v1")
            )
            with LiveServer(create_app(settings)) as hub:
                yield Live(hub.url, key, fake, admin)
    finally:
        await store.close()


async def poll(condition: Callable[[], object], what: str, seconds: float = 5.0) -> None:
    """Wait for something another server thread does, failing with `what` if it never does."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await anyio.sleep(0.005)
