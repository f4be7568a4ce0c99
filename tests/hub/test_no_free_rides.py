"""No free rides: a call that reached the provider is charged at least its prompt, counted
the way the provider counts it, and fields that would make the provider charge more than
the hub's rate are refused before anything goes upstream.

Through real uvicorn servers: the hub in front of the example fake provider, which records
what it received; credits are checked exactly against it.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Message

from hub.providers.registry import ProviderRegistry
from hub.proxy import Proxy
from hub.settings import ProviderSettings
from middleware.call import CALL_KEY, Call, Identity
from tests.conftest import PROVIDER_KEY, Live, live_hub, make_settings, poll

pytestmark = pytest.mark.anyio

INPUT_RATE, OUTPUT_RATE, IMAGE_RATE = 10_000, 20_000, 400_000_000
CHAT_MODELS = (
    "fake/gpt-4o-mini",
    "fake/slow-model",
    "fake/hang-model",
    "claude/claude-test",
)
IMAGE_MODEL = "fake/dall-e-3"


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    def settings(upstream: str) -> Any:
        claude = ProviderSettings("claude", "anthropic", upstream + "/v1", (PROVIDER_KEY,))
        return make_settings(
            db_url, provider="fake", base_url=upstream + "/v1", more_providers=(claude,)
        )

    async with live_hub(
        db_url, CHAT_MODELS, rates=(INPUT_RATE, OUTPUT_RATE), settings_for=settings
    ) as started:
        await started.admin.set_rate(
            IMAGE_MODEL, "imageGeneration", input_rate=INPUT_RATE, output_rate=0,
            image_rate=IMAGE_RATE,
        )  # fmt: skip
        yield started


def png_data_url(width: int, height: int, size: int = 150_000) -> str:
    """A PNG of this size as a data URL: a real header, then `size` bytes of filler (the
    hub reads only the header; a 200 KB data URL, as in the report)."""
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(
        ">I4sIIBBBBB", 13, b"IHDR", width, height, 8, 2, 0, 0, 0
    )
    data = header + b"\0\0\0\0" + bytes(size)
    return "data:image/png;base64," + base64.b64encode(data).decode()  # fmt: skip


async def cut_stream(live: Live, model: str, content: Any) -> dict[str, Any]:
    """Stream a chat, hang up after its first chunk, and wait for the call's record."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": content}]}
    async with live.client() as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert (await anext(response.aiter_lines())).startswith("data: {")
    await poll(lambda: live.fake.closed_early == 1, "the provider saw the hang-up")
    return await live.wait_for_call(status="failed", error_code="client_disconnected")


def charged(call: dict[str, Any]) -> int:
    return int(call["input_tokens"]) * INPUT_RATE + int(call["output_tokens"]) * OUTPUT_RATE


# Hang-ups -----------------------------------------------------------------------------


async def test_a_whole_answer_hung_up_on_while_the_provider_works_is_charged_its_prompt(
    live: Live,
) -> None:
    prompt = "Tell me about the sea"  # 21 characters: 6 tokens, and 1 of message framing
    body = {"model": "fake/hang-model", "messages": [{"role": "user", "content": prompt}]}
    async with live.client() as client:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: client.post("/v1/chat/completions", json=body))
            await poll(lambda: live.fake.requests, "the request reached the provider")
            group.cancel_scope.cancel()  # the client hangs up, before any answer
    await poll(lambda: live.fake.closed_early == 1, "the provider saw the hub hang up")

    [received] = live.fake.requests
    assert received["body"]["messages"] == body["messages"]  # the provider had the prompt
    call = await live.wait_for_call(status="failed", error_code="client_disconnected")
    assert call["usage_estimated"] is True
    assert (call["input_tokens"], call["output_tokens"]) == (7, 0)
    assert call["credits"] == 7 * INPUT_RATE
    # At least what the provider counts (the fake counts words).
    assert call["input_tokens"] >= len(prompt.split())


async def test_a_call_refused_before_going_upstream_stays_free(live: Live) -> None:
    async with live.client() as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "fake/gpt-4o-mini", "messages": "not a list"},
        )
    assert response.status_code == 400
    assert live.fake.requests == []
    calls = await live.calls()
    assert all(c["credits"] == 0 for c in calls)


# What a cut-off prompt is estimated at --------------------------------------------------


async def test_an_image_prompt_cut_off_mid_stream_is_charged_the_image_by_its_size(
    live: Live,
) -> None:
    image = png_data_url(1024, 1024)
    content = [
        {"type": "text", "text": "What is in this picture?"},  # 24 characters: 6 tokens
        {"type": "image_url", "image_url": {"url": image}},
    ]
    call = await cut_stream(live, "fake/slow-model", content)

    [received] = live.fake.requests
    assert received["body"]["messages"][0]["content"][1]["image_url"]["url"] == image
    # OpenAI's formula: 1024x1024 is scaled to 768x768, four 512 px tiles: 85 + 4 * 170.
    assert call["usage_estimated"] is True
    assert call["input_tokens"] == 6 + 765 + 1
    assert call["output_tokens"] >= 1
    assert call["credits"] == charged(call)


async def test_cjk_text_cut_off_mid_stream_is_estimated_at_a_token_a_character(
    live: Live,
) -> None:
    prompt = "你好世界" * 50  # 200 characters: not 50 tokens at four characters a token
    call = await cut_stream(live, "fake/slow-model", prompt)

    [received] = live.fake.requests
    assert received["body"]["messages"][0]["content"] == prompt
    assert call["usage_estimated"] is True
    assert call["input_tokens"] == 200 + 1
    assert call["credits"] == charged(call)


# Fields that change the price -----------------------------------------------------------


def cached(ttl: str) -> dict[str, Any]:
    """A prompt with a cache mark of this lifetime on its content part."""
    part = {
        "type": "text",
        "text": "A long document",
        "cache_control": {"type": "ephemeral", "ttl": ttl},
    }
    return {"messages": [{"role": "user", "content": [part]}]}


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("fake/gpt-4o-mini", {"service_tier": "priority"}, "service_tier"),
    ("fake/gpt-4o-mini", {"service_tier": "scale"}, "service_tier"),
    ("fake/gpt-4o-mini", {"models": ["openai/gpt-4o", "anthropic/claude-opus-4"]}, "models"),
    ("fake/gpt-4o-mini", {"route": "fallback"}, "route"),
    ("fake/gpt-4o-mini", {"provider": {"order": ["Anthropic"]}}, "provider"),
    ("fake/gpt-4o-mini", {"plugins": [{"id": "web"}]}, "plugins"),
    ("fake/gpt-4o-mini", {"web_search_options": {}}, "web_search_options"),
    ("fake/gpt-4o-mini", {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("claude/claude-test", cached("1h"), "messages[0].content[0].cache_control.ttl"),
    ("fake/gpt-4o-mini", cached("1h"), "messages[0].content[0].cache_control.ttl"),
    (IMAGE_MODEL, {"quality": "hd"}, "quality"),
    (IMAGE_MODEL, {"quality": "high"}, "quality"),
    (IMAGE_MODEL, {"size": "1792x1024"}, "size"),
    (IMAGE_MODEL, {"partial_images": 2}, "partial_images"),
]

ALLOWED: list[tuple[str, dict[str, Any]]] = [
    ("fake/gpt-4o-mini", {"service_tier": "flex"}),
    ("fake/gpt-4o-mini", {"service_tier": "default"}),
    ("fake/gpt-4o-mini", {"service_tier": "auto"}),
    ("claude/claude-test", cached("5m")),
    (IMAGE_MODEL, {"quality": "standard", "size": "1024x1024"}),
    (IMAGE_MODEL, {"quality": "low", "size": "512x512"}),
    (IMAGE_MODEL, {"size": "auto"}),
]


def request(model: str, extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if model == IMAGE_MODEL:
        return "/v1/images/generations", {"model": model, "prompt": "a red fox", **extra}
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi"}], **extra}
    return "/v1/chat/completions", body


async def test_each_field_that_raises_the_price_is_refused_naming_it(live: Live) -> None:
    async with live.client() as client:
        for model, extra, param in REFUSED:
            path, body = request(model, extra)
            response = await client.post(path, json=body)
            assert response.status_code == 400, (param, response.text)
            error = response.json()["error"]
            assert (error["code"], error["param"]) == ("unsupported_parameter", param)
            assert param.split(".")[-1] in error["message"]
    assert live.fake.requests == []  # nothing reached the provider
    calls = await live.wait_for_calls(len(REFUSED))
    assert {c["error_code"] for c in calls} == {"unsupported_parameter"}
    assert all(c["credits"] == 0 for c in calls)


async def test_values_that_cost_no_more_than_the_default_pass(live: Live) -> None:
    async with live.client() as client:
        for model, extra in ALLOWED:
            path, body = request(model, extra)
            response = await client.post(path, json=body)
            assert response.status_code == 200, (model, extra, response.text)
    assert len(live.fake.requests) == len(ALLOWED)
    service_tiers = [r["body"].get("service_tier") for r in live.fake.requests[:3]]
    assert service_tiers == ["flex", "default", "auto"]  # passed through as sent
    marks = live.fake.requests[3]["body"]["messages"][0]["content"][0]["cache_control"]
    assert marks == {"type": "ephemeral", "ttl": "5m"}
    images = [c for c in await live.wait_for_calls(len(ALLOWED)) if c["type"] == "imageGeneration"]
    assert len(images) == 3 and all(c["credits"] == IMAGE_RATE for c in images)


async def test_a_whole_answer_that_arrived_before_the_hang_up_is_charged_its_usage() -> None:
    # Driven directly, so the hang-up lands exactly while the answer is being sent.
    answer = {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9},
    }

    class Upstream(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=answer)

    provider = ProviderSettings("mock", "openai", "http://up.test/v1", ("sk-0123456789ab",))
    registry = ProviderRegistry(
        {"mock": provider}, {"connect": 1, "read": 5, "write": 5, "pool": 1}
    )
    body = {"model": "mock/m", "messages": [{"role": "user", "content": "x"}]}
    call = Call(Identity(1, "did:abt:u"), "chatCompletion", "mock/m", body, b"")
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", CALL_KEY: call}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the client is gone: this send never completes

    async def receive() -> Message:
        await asyncio.sleep(0.1)
        return {"type": "http.disconnect"}

    with anyio.fail_after(5):
        await Proxy(registry, Upstream())(scope, receive, send)

    assert call.client_gone and call.sent_upstream
    assert call.usage is not None and not call.usage_estimated
    assert (call.usage.input_tokens, call.usage.output_tokens) == (40, 9)
