"""Streaming through real uvicorn servers: the hub in front of the example fake provider."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from examples.fake_provider import FakeProvider
from hub.app import create_app
from hub.store import SqlStore
from hub.store.admin import Admin
from middleware.money import to_units
from tests.conftest import USER, LiveServer, make_settings

pytestmark = pytest.mark.anyio

MODELS = ("fake/gpt-4o-mini", "fake/stall-model", "fake/slow-model")


class Live:
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
        """Poll the database (the hub writes from its own thread) until a call matches."""
        deadline = time.monotonic() + 10
        while True:
            calls = await self.calls()
            for call in calls:
                if all(call[k] == v for k, v in expected.items()):
                    return call
            if time.monotonic() > deadline:
                raise AssertionError(f"no call matching {expected}; calls: {calls}")
            await anyio.sleep(0.05)


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    store = SqlStore(db_url)
    await store.open()
    admin = Admin(store)
    _, key = await admin.create_key(USER)
    await admin.grant(USER, to_units(5))
    for model in MODELS:
        await admin.set_rate(model, "chatCompletion", input_rate=10_000, output_rate=20_000)
    fake = FakeProvider()
    with LiveServer(fake) as upstream:
        settings = make_settings(db_url, provider="fake", base_url=upstream.url + "/v1")
        with LiveServer(create_app(settings)) as hub:
            yield Live(hub.url, key, fake, admin)
    await store.close()


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Tell me things"}], **extra}


async def test_chunks_reach_the_client_before_the_upstream_finishes(live: Live) -> None:
    # The stall model sends one chunk and then holds the stream open: a buffering proxy
    # would deliver nothing at all.
    async with live.client() as client:
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat("fake/stall-model", stream=True)
        ) as response:
            assert response.status_code == 200
            first = await anext(response.aiter_lines())
    assert first.startswith("data: ") and json.loads(first[6:])["choices"][0]["delta"]


async def test_processing_row_is_visible_while_the_stream_is_in_flight(live: Live) -> None:
    async with live.client() as client:
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat("fake/stall-model", stream=True)
        ) as response:
            await anext(response.aiter_lines())
            in_flight = await live.wait_for_call(status="processing")
            assert in_flight["model"] == "fake/stall-model" and in_flight["stream"] is True
    settled = await live.wait_for_call(id=in_flight["id"], status="failed")
    assert settled["error_code"] == "client_disconnected"


async def test_client_hang_up_closes_the_upstream_request(live: Live) -> None:
    async with live.client() as client:
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat("fake/slow-model", stream=True)
        ) as response:
            await anext(response.aiter_lines())
    deadline = time.monotonic() + 5
    while live.fake.closed_early == 0 and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    assert live.fake.closed_early == 1
    call = await live.wait_for_call(status="failed", error_code="client_disconnected")
    # What was delivered before the hang-up is billed, estimated, never given away.
    assert call["usage_estimated"] is True and call["output_tokens"] >= 1
    assert call["credits"] > 0


async def test_streamed_call_is_recorded_with_usage_and_credits(live: Live) -> None:
    async with live.client() as client:
        response = await client.post(
            "/v1/chat/completions", json=chat("fake/gpt-4o-mini", stream=True)
        )
    assert response.status_code == 200
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in response.text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    )
    assert text.startswith("Hello! I am a fake model")
    call = await live.wait_for_call(status="success")
    assert (call["input_tokens"], call["output_tokens"]) == (3, len(text.split()))
    assert call["credits"] == 3 * 10_000 + len(text.split()) * 20_000
    assert call["ttfb_ms"] is not None
