"""Streaming through real uvicorn servers: the hub in front of the example fake provider."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from tests.conftest import Live, live_hub

pytestmark = pytest.mark.anyio

MODELS = ("fake/gpt-4o-mini", "fake/stall-model", "fake/slow-model")


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    async with live_hub(db_url, MODELS) as started:
        yield started


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
            # Kept: a dropped line iterator can be collected, closing the stream early.
            lines = response.aiter_lines()
            await anext(lines)
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
