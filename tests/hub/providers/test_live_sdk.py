"""The official openai SDK calling Anthropic and Gemini models through a live hub.

Real uvicorn servers on 127.0.0.1: the example fake provider speaking each protocol, and
the hub in front of it with one provider of each kind.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from hub.settings import ProviderSettings, Settings
from tests.conftest import Live, live_hub, make_settings
from tests.hub.providers.test_anthropic import WEATHER_TOOL

pytestmark = pytest.mark.anyio

MODELS = ("claude/claude-sonnet-4", "gemini/gemini-2.5-flash")


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    def settings(upstream_url: str) -> Settings:
        gemini = ProviderSettings("gemini", "gemini", upstream_url, ("g-key",))
        return make_settings(
            db_url,
            provider="claude",
            kind="anthropic",
            base_url=upstream_url,
            more_providers=(gemini,),
        )

    async with live_hub(db_url, MODELS, settings_for=settings) as started:
        yield started


@pytest.mark.parametrize("model", MODELS)
async def test_sdk_streams_a_tool_call_from_each_protocol(live: Live, model: str) -> None:
    client = AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)

    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    names, arguments, finish, usage = [], "", None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
                if call.function and call.function.arguments:
                    arguments += call.function.arguments
            finish = choice.finish_reason or finish
    await client.close()

    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens == 5
    recorded = await live.wait_for_call(model=model, status="success")
    assert recorded["output_tokens"] == 5 and recorded["input_tokens"] == usage.prompt_tokens
    assert recorded["credits"] == usage.prompt_tokens * 10_000 + 5 * 20_000
    assert live.fake.requests[-1]["headers"].get("authorization") is None


@pytest.mark.parametrize("model", MODELS)
async def test_sdk_gets_text_streamed_and_whole(live: Live, model: str) -> None:
    client = AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)
    messages = [{"role": "user", "content": "Say hi"}]

    whole = await client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    stream = await client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.close()

    assert whole.choices[0].message.content == text
    assert text.startswith("Hello! I am a fake model")
    assert whole.usage is not None and whole.usage.completion_tokens == len(text.split())


async def test_sdk_generates_images_with_imagen(live: Live) -> None:
    await live.admin.set_rate(
        "gemini/imagen-4.0-generate-001",
        "imageGeneration",
        input_rate=0,
        output_rate=0,
        image_rate=400_000_000,
    )
    client = AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)

    result = await client.images.generate(
        model="gemini/imagen-4.0-generate-001", prompt="a lighthouse", n=3
    )
    await client.close()

    assert [base64.b64decode(d.b64_json or "")[:4] for d in result.data or []] == [b"\x89PNG"] * 3
    recorded = await live.wait_for_call(model="gemini/imagen-4.0-generate-001", status="success")
    assert (recorded["image_count"], recorded["credits"]) == (3, 3 * 400_000_000)
