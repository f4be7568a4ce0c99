"""The official `anthropic` Python SDK against a live hub in front of the example fake
provider: Messages streamed and whole, with tools and thinking, and count_tokens, both to
an Anthropic provider (the client's bytes pass through) and to an OpenAI-compatible one
(translated both ways); each call's credits checked against the rate and the fake's
counts (words); the hub's refusals raised as the SDK's own exception classes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anthropic
import pytest

from examples.fake_protocols import REPLY, SIGNATURE, THOUGHT
from hub.settings import Limits, ProviderSettings, Settings
from middleware.limits import LimitPolicy
from middleware.money import to_units
from middleware.ports import Quota
from tests.conftest import USER, Live, live_hub, make_settings

pytestmark = pytest.mark.anyio

NATIVE = "fake-claude/claude-sonnet-4"  # an Anthropic provider: pass-through
TRANSLATED = "fake/gpt-4o-mini"  # an OpenAI-compatible provider: translated
# The same provider, a model name the fake calls the first tool offered for.
TRANSLATED_TOOLS = "fake/tools-gpt-4o-mini"
INPUT_RATE, OUTPUT_RATE = 10_000, 20_000
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PROMPT = "What is the weather in Paris?"


def anthropic_hub(tmp_path: Path, **changes: Any) -> AbstractAsyncContextManager[Live]:
    """The fake provider behind two providers (`fake-claude`, Anthropic; `fake`, OpenAI),
    the hub in front, both models priced. SQLite only: what is tested with it is the wire
    format; the stores have tests of their own."""

    def settings(upstream_url: str) -> Settings:
        claude = ProviderSettings("fake-claude", "anthropic", upstream_url, ("claude-key",))
        return make_settings(
            f"sqlite:///{tmp_path / 'hub.db'}",
            provider="fake",
            base_url=upstream_url + "/v1",
            more_providers=(claude,),
            **changes,
        )

    return live_hub(
        f"sqlite:///{tmp_path / 'hub.db'}",
        (NATIVE, TRANSLATED, TRANSLATED_TOOLS),
        rates=(INPUT_RATE, OUTPUT_RATE),
        settings_for=settings,
    )


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with anthropic_hub(tmp_path) as started:
        yield started


def client(live: Live, **options: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=live.hub_url, api_key=live.key, max_retries=0, **options
    )


def credits(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * INPUT_RATE + output_tokens * OUTPUT_RATE


def words(*texts: str) -> int:
    return sum(len(text.split()) for text in texts)


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED])
async def test_a_whole_answer_and_its_exact_credits(live: Live, model: str) -> None:
    async with client(live) as sdk:
        message = await sdk.messages.create(
            model=model,
            max_tokens=200,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say hi"}],
            extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
        )
        version = sdk.default_headers["anthropic-version"]
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == REPLY  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    # The fake counts words: the prompt is "Be brief." and "Say hi" on either protocol.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, words(REPLY))
    recorded = await live.wait_for_call(model=model, status="success")
    assert (recorded["input_tokens"], recorded["output_tokens"]) == (4, words(REPLY))
    assert recorded["credits"] == credits(4, words(REPLY))
    sent = live.fake.requests[-1]
    if model == NATIVE:
        # The client's own body, only the model renamed; the hub's key, not the caller's.
        assert sent["path"] == "/v1/messages" and sent["body"]["system"] == "Be brief."
        assert sent["body"]["model"] == "claude-sonnet-4"
        assert sent["headers"]["x-api-key"] == "claude-key"
        # The API version and the betas the client wrote its body for.
        assert sent["headers"]["anthropic-version"] == version
        assert sent["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    else:
        assert sent["path"] == "/v1/chat/completions"
        assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["body"]["max_tokens"] == 200


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED_TOOLS])
async def test_a_streamed_tool_call_and_its_exact_credits(live: Live, model: str) -> None:
    async with client(live) as sdk:
        async with sdk.messages.stream(
            model=model,
            max_tokens=200,
            messages=[{"role": "user", "content": PROMPT}],
            tools=[WEATHER],  # type: ignore[list-item]
        ) as stream:
            names = [event.type async for event in stream]
            message = await stream.get_final_message()
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "input_json" in names  # the SDK's own event for input_json_delta
    [block] = message.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    prompt = words(PROMPT)
    assert message.usage.output_tokens == 5
    recorded = await live.wait_for_call(model=model, status="success")
    assert recorded["output_tokens"] == 5
    if model == NATIVE:
        # The Anthropic side counts the words of the tools too (their description).
        assert recorded["input_tokens"] == message.usage.input_tokens
    else:
        assert recorded["input_tokens"] == prompt == message.usage.input_tokens
    assert recorded["credits"] == credits(recorded["input_tokens"], 5)


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED_TOOLS])
async def test_a_tool_result_round_trip(live: Live, model: str) -> None:
    history: list[Any] = [
        {"role": "user", "content": PROMPT},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}],
        },
    ]
    async with client(live) as sdk:
        message = await sdk.messages.create(
            model=model,
            max_tokens=200,
            messages=history,
            tools=[WEATHER],  # type: ignore[list-item]
        )
    assert message.content[0].text == REPLY  # type: ignore[union-attr]
    sent = live.fake.requests[-1]["body"]
    if model == TRANSLATED_TOOLS:
        assert sent["messages"][1]["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": "toolu_1",
            "content": "Sunny",
        }
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    else:
        assert sent["messages"] == history


async def test_thinking_passes_through_with_its_signature(live: Live) -> None:
    async with client(live) as sdk:
        async with sdk.messages.stream(
            model=NATIVE,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Say hi"}],
        ) as stream:
            names = [event.type async for event in stream]
            message = await stream.get_final_message()
    assert "thinking" in names and "signature" in names
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == THOUGHT
    assert thinking.signature == SIGNATURE
    assert text.type == "text" and text.text == REPLY
    output = words(THOUGHT, REPLY)
    assert message.usage.output_tokens == output
    recorded = await live.wait_for_call(model=NATIVE, status="success")
    assert recorded["credits"] == credits(2, output)


async def test_thinking_asked_of_a_translated_model_becomes_a_reasoning_effort(live: Live) -> None:
    async with client(live) as sdk:
        await sdk.messages.create(
            model=TRANSLATED,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Say hi"}],
        )
    assert live.fake.requests[-1]["body"]["reasoning_effort"] == "low"


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED])
async def test_count_tokens_is_answered_and_neither_recorded_nor_billed(
    live: Live, model: str
) -> None:
    async with client(live) as sdk:
        counted = await sdk.messages.count_tokens(
            model=model,
            system="Be brief.",
            messages=[{"role": "user", "content": PROMPT}],
            tools=[WEATHER],  # type: ignore[list-item]
        )
        small = await sdk.messages.count_tokens(
            model=model, messages=[{"role": "user", "content": "Hi"}]
        )
    assert counted.input_tokens > small.input_tokens > 0
    assert await live.calls() == []
    assert live.fake.requests == []


async def test_the_hubs_refusals_raise_the_sdks_own_exceptions(live: Live) -> None:
    messages: Any = [{"role": "user", "content": "Say hi"}]
    async with anthropic.AsyncAnthropic(
        base_url=live.hub_url, api_key="ahk_" + "x" * 40, max_retries=0
    ) as stranger:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await stranger.messages.create(model=NATIVE, max_tokens=10, messages=messages)
        # count_tokens is no model route, yet its errors are Anthropic's too.
        with pytest.raises(anthropic.AuthenticationError) as uncounted:
            await stranger.messages.count_tokens(model=NATIVE, messages=messages)
    assert uncounted.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert refused.value.body["error"]["code"] == "invalid_api_key"  # type: ignore[index]
    async with client(live) as sdk:
        with pytest.raises(anthropic.NotFoundError):
            await sdk.messages.create(model="fake-claude-none/x", max_tokens=10, messages=messages)
        with pytest.raises(anthropic.NotFoundError):
            await sdk.messages.count_tokens(model="fake-claude-none/x", messages=messages)
        with pytest.raises(anthropic.BadRequestError) as bad:
            await sdk.messages.create(
                model=TRANSLATED,
                max_tokens=10,
                messages=messages,
                tools=[{"type": "bash_20250124", "name": "bash"}],
            )
        assert bad.value.body["error"]["code"] == "unsupported_parameter"  # type: ignore[index]
        assert bad.value.body["error"]["param"] == "tools[0]"  # type: ignore[index]
        # Out of credit: 402, Anthropic's billing_error; the SDK's status error carries it.
        await live.admin.grant(USER, -to_units(5))
        with pytest.raises(anthropic.APIStatusError) as broke:
            await sdk.messages.create(model=NATIVE, max_tokens=10, messages=messages)
    assert broke.value.status_code == 402
    error = broke.value.body["error"]  # type: ignore[index]
    assert (error["type"], error["code"]) == ("billing_error", "insufficient_credits")
    assert live.fake.requests == []
    assert json.dumps(error)  # plain JSON, no traceback


async def test_over_a_rate_limit_the_sdk_raises_its_rate_limit_error(tmp_path: Path) -> None:
    messages: Any = [{"role": "user", "content": "Say hi"}]
    async with anthropic_hub(tmp_path, rate_limits=LimitPolicy(key=Quota(rpm=1))) as live:
        async with client(live) as sdk:
            await sdk.messages.create(model=TRANSLATED, max_tokens=10, messages=messages)
            with pytest.raises(anthropic.RateLimitError) as limited:
                await sdk.messages.create(model=NATIVE, max_tokens=10, messages=messages)
        assert int(limited.value.response.headers["retry-after"]) > 0
        error = limited.value.body["error"]  # type: ignore[index]
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
        assert len(live.fake.requests) == 1


async def test_a_stream_the_provider_breaks_off_ends_with_an_error_event(tmp_path: Path) -> None:
    # The fake's `stall-` model sends one chunk, then nothing: the hub's read timeout ends it.
    limits = Limits(key_cache_seconds=0.2, balance_cache_seconds=0.2, upstream_read_timeout=0.5)
    async with anthropic_hub(tmp_path, limits=limits) as live:
        await live.admin.set_rate("fake/stall-1", "chatCompletion", input_rate=1, output_rate=1)
        async with client(live) as sdk:
            stream = await sdk.messages.create(
                model="fake/stall-1",
                max_tokens=10,
                messages=[{"role": "user", "content": "Say hi"}],
                stream=True,
            )
            names = []
            with pytest.raises(anthropic.APIStatusError) as broken:
                async for event in stream:
                    names.append(event.type)
        assert names[:3] == ["message_start", "content_block_start", "content_block_delta"]
        error = broken.value.body["error"]  # type: ignore[index]
        assert (error["type"], error["code"]) == ("api_error", "upstream_timeout")
        recorded = await live.wait_for_call(model="fake/stall-1", status="failed")
        assert recorded["error_code"] == "upstream_timeout" and recorded["output_tokens"] > 0
