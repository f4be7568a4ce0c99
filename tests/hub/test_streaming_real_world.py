"""Streaming under real-world trouble, through real uvicorn servers on 127.0.0.1.

The example fake provider and the hub each run under uvicorn in a thread of this process,
so the fake provider's time.monotonic() stamps and this process's RSS are comparable with
what the test itself measures.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from openai import APIError, AsyncOpenAI

from examples.fake_provider import BIG_CHUNK
from hub.settings import Limits
from tests.conftest import Live, make_settings, poll
from tests.conftest import live_hub as shared_live_hub
from tests.hub.test_live_streaming import chat

pytestmark = pytest.mark.anyio

INPUT_RATE, OUTPUT_RATE = 10_000, 20_000
BIG_MEGABYTES = 50
MODELS = (
    "fake/slow-model",
    "fake/stall-model",
    "fake/hang-model",
    f"fake/big-{BIG_MEGABYTES}",
    "fake/big-2",
)
# Short enough for a fast test, long enough that a loaded machine never trips it by itself.
READ_TIMEOUT = 0.5


def live_hub(db_url: str, limits: Limits | None = None) -> Any:
    """The fake provider and a hub in front of it (with these limits), sharing one store."""

    def settings(upstream_url: str) -> Any:
        changes: dict[str, Any] = {} if limits is None else {"limits": limits}
        return make_settings(db_url, provider="fake", base_url=upstream_url + "/v1", **changes)

    return shared_live_hub(db_url, MODELS, rates=(INPUT_RATE, OUTPUT_RATE), settings_for=settings)


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    async with live_hub(db_url) as started:
        yield started


@pytest.fixture
async def live_sqlite(tmp_path: Path) -> AsyncIterator[Live]:
    """For tests whose subject is the stream, not the store: SQLite alone is enough."""
    async with live_hub(f"sqlite:///{tmp_path / 'hub.db'}") as started:
        yield started


@pytest.fixture
async def live_3s_timeout(tmp_path: Path) -> AsyncIterator[Live]:
    """A read timeout long enough to tell a prompt close from a timed-out one."""
    limits = Limits(upstream_read_timeout=3.0, key_cache_seconds=0.2, balance_cache_seconds=0.2)
    async with live_hub(f"sqlite:///{tmp_path / 'hub.db'}", limits) as started:
        yield started


@pytest.fixture
async def live_short_timeout(db_url: str) -> AsyncIterator[Live]:
    limits = Limits(
        upstream_read_timeout=READ_TIMEOUT, key_cache_seconds=0.2, balance_cache_seconds=0.2
    )
    async with live_hub(db_url, limits) as started:
        yield started


def events(text: str) -> list[str]:
    """The data of each SSE event in a whole response body."""
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def credits_for(call: dict[str, Any]) -> int:
    return int(call["input_tokens"]) * INPUT_RATE + int(call["output_tokens"]) * OUTPUT_RATE


def rss_bytes() -> int:
    """This process's resident set size; the hub serves from a thread of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_client_hang_up_reaches_the_provider_within_100_ms(live: Live) -> None:
    # The slow model sends a chunk every 0.2 s: after the second one the upstream is
    # mid-stream, and nothing but the hub closing its connection would tell it to stop.
    async with live.client() as client:
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat("fake/slow-model", stream=True)
        ) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: {")
            await anext(lines)  # the blank line ending the first event
            assert (await anext(lines)).startswith("data: {")
            hung_up = time.monotonic()
        # Leaving the block closes the half-read response's connection.
    await poll(lambda: live.fake.disconnected_at, "the provider saw the hub hang up")
    latency = live.fake.disconnected_at[0] - hung_up
    print(f"hang-up to provider disconnect: {latency * 1000:.1f} ms")
    assert latency < 0.1, f"the provider saw the hang-up {latency * 1000:.0f} ms later"
    await poll(lambda: live.fake.closed_early == 1, "the provider stopped mid-stream")
    call = await live.wait_for_call(status="failed", error_code="client_disconnected")
    # What was delivered before the hang-up is billed, estimated, never given away.
    assert call["usage_estimated"] is True and call["output_tokens"] >= 2
    assert call["credits"] == credits_for(call) > 0


async def test_slow_reader_holds_a_50_mb_stream_back_without_the_hub_buffering_it(
    live_sqlite: Live,
) -> None:
    live = live_sqlite
    async with live.client() as client:
        # A small stream first, so connections, buffers and allocator arenas are warm and
        # the baseline is the steady state.
        warm = await client.post("/v1/chat/completions", json=chat("fake/big-2", stream=True))
        assert warm.status_code == 200 and events(warm.text)[-1] == "[DONE]"
        baseline = peak = rss_bytes()
        content = chunks = 0
        done = False
        pending = b""
        sent_before = live.fake.stream_bytes
        ahead = 0
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json=chat(f"fake/big-{BIG_MEGABYTES}", stream=True),
        ) as response:
            assert response.status_code == 200
            read = 0
            paused_at = 0
            async for data in response.aiter_raw():
                read += len(data)
                pending += data
                *whole, pending = pending.split(b"\n\n")
                for event in whole:
                    payload = event.removeprefix(b"data: ")
                    if payload == b"[DONE]":
                        done = True
                        continue
                    delta = json.loads(payload)["choices"][0]["delta"]
                    if "content" in delta:
                        assert delta["content"] == BIG_CHUNK
                        content += len(delta["content"])
                        chunks += 1
                # A slow reader: a long pause at the start, then a short one every 4 MB.
                if paused_at == 0:
                    await anyio.sleep(1.0)
                    ahead = live.fake.stream_bytes - sent_before - read
                    paused_at = read
                elif read - paused_at >= 4 * 2**20:
                    await anyio.sleep(0.1)
                    paused_at = read
                peak = max(peak, rss_bytes())
            upstream_sent = live.fake.stream_bytes
    growth = peak - baseline
    print(f"RSS growth while streaming {BIG_MEGABYTES} MiB: {growth / 2**20:.1f} MiB")
    print(f"the provider was {ahead / 2**20:.1f} MiB ahead of the reader in its pause")
    assert done and pending.strip() == b""
    assert content == BIG_MEGABYTES * 2**20
    assert chunks == content // len(BIG_CHUNK)
    assert upstream_sent >= content  # every byte came from the provider, through the hub
    # The provider outran the paused reader, so the stream really was held back somewhere;
    # the RSS bound says it was not in the hub (loopback socket buffers hold it instead).
    assert ahead > 2**20, "the reader never fell behind: the test exercised no backpressure"
    assert growth < 20 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB"
    call = await live.wait_for_call(status="success", model=f"fake/big-{BIG_MEGABYTES}")
    assert call["output_tokens"] == chunks and call["usage_estimated"] is False


async def test_upstream_stall_ends_the_stream_with_a_timeout_error_event(
    live_short_timeout: Live,
) -> None:
    live = live_short_timeout
    started = time.monotonic()
    async with live.client() as client:
        response = await client.post(
            "/v1/chat/completions", json=chat("fake/stall-model", stream=True)
        )
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    data = events(response.text)
    assert json.loads(data[0])["choices"][0]["delta"]["content"]
    # The stream ends with the error, and not a `[DONE]` that would pass for success.
    error = json.loads(data[-1])["error"]
    assert error["code"] == "upstream_timeout" and "stalled" in error["message"]
    assert len(data) == 2
    # Cut off by the read timeout: not before it, and not much after.
    assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + 4
    call = await live.wait_for_call(status="failed")
    assert call["error_code"] == "upstream_timeout"
    assert call["usage_estimated"] is True and call["output_tokens"] == 1
    assert call["credits"] == credits_for(call) > 0
    # The stalled provider connection is closed, not left hanging for its minute.
    await poll(lambda: live.fake.disconnected_at, "the hub closed the stalled upstream")


async def test_openai_sdk_raises_the_stall_timeout_after_the_first_chunk(
    live_short_timeout: Live,
) -> None:
    live = live_short_timeout
    client = AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)
    received = []
    with pytest.raises(APIError) as raised:
        stream = await client.chat.completions.create(
            model="fake/stall-model",
            messages=[{"role": "user", "content": "Tell me things"}],
            stream=True,
        )
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    await client.close()
    assert received == ["Hello!"]
    assert raised.value.code == "upstream_timeout"


async def test_provider_that_never_answers_gets_504_and_no_charge(
    live_short_timeout: Live,
) -> None:
    live = live_short_timeout
    started = time.monotonic()
    async with live.client() as client:
        response = await client.post("/v1/chat/completions", json=chat("fake/hang-model"))
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + 4
    call = await live.wait_for_call(status="failed")
    assert call["error_code"] == "upstream_timeout" and call["credits"] == 0
    # The hub gave up on the request: the provider sees it go, rather than hold it open.
    await poll(lambda: live.fake.closed_early == 1, "the hub closed the unanswered request")


async def test_client_hang_up_before_a_whole_answer_closes_the_upstream_request(
    live_3s_timeout: Live,
) -> None:
    live = live_3s_timeout
    async with live.client() as client:
        async with anyio.create_task_group() as group:
            post = functools.partial(
                client.post, "/v1/chat/completions", json=chat("fake/hang-model")
            )
            group.start_soon(post)
            await poll(lambda: live.fake.requests, "the request reached the provider")
            hung_up = time.monotonic()
            group.cancel_scope.cancel()  # httpx closes the connection of a cancelled request
    await poll(lambda: live.fake.disconnected_at, "the provider saw the hub hang up", 1.5)
    latency = live.fake.disconnected_at[0] - hung_up
    assert latency < 0.1, f"the provider saw the hang-up {latency * 1000:.0f} ms later"
    call = await live.wait_for_call(status="failed")
    assert call["error_code"] == "client_disconnected"
    # The provider had the prompt (and bills it): so does the caller, estimated.
    assert call["usage_estimated"] is True and call["output_tokens"] == 0
    assert call["credits"] == credits_for(call) > 0


@pytest.fixture
async def live_impatient(tmp_path: Path) -> AsyncIterator[Live]:
    limits = Limits(client_send_timeout=0.5, key_cache_seconds=0.2, balance_cache_seconds=0.2)
    async with live_hub(f"sqlite:///{tmp_path / 'hub.db'}", limits) as started:
        yield started


async def test_a_client_that_stops_reading_is_cut_off_and_billed_what_it_took(
    live_impatient: Live,
) -> None:
    live = live_impatient
    host, port = live.hub_url.removeprefix("http://").split(":")
    body = json.dumps(chat(f"fake/big-{BIG_MEGABYTES}", stream=True)).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: hub\r\n"
        + f"authorization: Bearer {live.key}\r\ncontent-type: application/json\r\n".encode()
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")  # the answer starts, then nothing is read
    started = time.monotonic()
    call = await live.wait_for_call(model=f"fake/big-{BIG_MEGABYTES}", status="failed")
    waited = time.monotonic() - started
    writer.close()

    assert head.startswith(b"HTTP/1.1 200")
    assert call["error_code"] == "client_too_slow"
    assert waited < 8  # the socket buffers fill in a moment, then 0.5 s of no progress
    # Billed for what reached the client's socket, estimated as the stream was cut off.
    assert call["usage_estimated"] is True and 0 < call["output_tokens"]
    assert call["output_tokens"] < BIG_MEGABYTES * 2**20 // len(BIG_CHUNK)
    assert live.fake.closed_early >= 1  # the provider was told to stop
