"""The official `anthropic` SDK (Messages) and `openai` SDK (Responses) calling a Gemini
model through a live hub: both formats are translated to generateContent and back, whole
and streamed, in front of the example fake provider's Gemini side. Each answer's text is
checked, and each call's credits against the rate and the fake's counts (words)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import pytest
from openai import AsyncOpenAI

from examples.fake_protocols import REPLY
from hub.settings import ProviderSettings, Settings
from tests.conftest import Live, live_hub, make_settings

pytestmark = pytest.mark.anyio

GEMINI = "fake-gemini/gemini-2.5-flash"
INPUT_RATE, OUTPUT_RATE = 10_000, 20_000
# The fake counts words: "Be brief." and "Say hi" reach it as Gemini contents either way.
PROMPT_WORDS = 4
REPLY_WORDS = len(REPLY.split())
MESSAGES_WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
RESPONSES_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}


def settings_for(tmp_path: Path, upstream_url: str) -> Settings:
    gemini = ProviderSettings(
        "fake-gemini", "gemini", upstream_url, ("gemini-key",), ("gemini-2.5-flash",)
    )
    return make_settings(
        f"sqlite:///{tmp_path / 'hub.db'}",
        provider="fake",
        base_url=upstream_url + "/v1",
        more_providers=(gemini,),
    )


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_hub(
        f"sqlite:///{tmp_path / 'hub.db'}",
        (GEMINI,),
        rates=(INPUT_RATE, OUTPUT_RATE),
        settings_for=lambda url: settings_for(tmp_path, url),
    ) as started:
        yield started


async def check_billed(live: Live, client_format: str) -> None:
    """The call settled with the fake's counts, at exactly the rate."""
    recorded = await live.wait_for_call(model=GEMINI, status="success")
    assert (recorded["input_tokens"], recorded["output_tokens"]) == (PROMPT_WORDS, REPLY_WORDS)
    assert recorded["credits"] == PROMPT_WORDS * INPUT_RATE + REPLY_WORDS * OUTPUT_RATE
    assert recorded["client_format"] == client_format


def check_sent(live: Live, streamed: bool) -> None:
    """Gemini's own request reached the provider, with the hub's key."""
    sent = live.fake.requests[-1]
    method = "streamGenerateContent" if streamed else "generateContent"
    assert sent["path"] == f"/v1beta/models/gemini-2.5-flash:{method}"
    assert sent["headers"]["x-goog-api-key"] == "gemini-key"
    assert sent["body"]["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert sent["body"]["contents"][0]["parts"][0]["text"] == "Say hi"


def messages_client(live: Live) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=live.hub_url, api_key=live.key, max_retries=0)


def responses_client(live: Live) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)


async def test_a_messages_call_to_gemini_whole(live: Live) -> None:
    async with messages_client(live) as sdk:
        message = await sdk.messages.create(
            model=GEMINI,
            max_tokens=200,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say hi"}],
        )
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == REPLY  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        PROMPT_WORDS,
        REPLY_WORDS,
    )
    check_sent(live, streamed=False)
    assert live.fake.requests[-1]["body"]["generationConfig"]["maxOutputTokens"] == 200
    await check_billed(live, "anthropic")


async def test_a_messages_call_to_gemini_streamed(live: Live) -> None:
    async with messages_client(live) as sdk:
        async with sdk.messages.stream(
            model=GEMINI,
            max_tokens=200,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say hi"}],
        ) as stream:
            names = [event.type async for event in stream]
            message = await stream.get_final_message()
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names.count("text") > 2  # streamed, not one answer at the end
    assert message.content[0].text == REPLY  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == REPLY_WORDS
    check_sent(live, streamed=True)
    await check_billed(live, "anthropic")


async def test_a_responses_call_to_gemini_whole(live: Live) -> None:
    async with responses_client(live) as sdk:
        answer = await sdk.responses.create(
            model=GEMINI, input="Say hi", instructions="Be brief.", max_output_tokens=200
        )
    assert answer.status == "completed" and answer.id.startswith("resp_")
    assert answer.output_text == REPLY
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (PROMPT_WORDS, REPLY_WORDS)
    check_sent(live, streamed=False)
    await check_billed(live, "responses")


async def test_a_responses_call_to_gemini_streamed(live: Live) -> None:
    async with responses_client(live) as sdk:
        stream = await sdk.responses.create(
            model=GEMINI, input="Say hi", instructions="Be brief.", stream=True
        )
        types, text, final = [], "", None
        async for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            elif event.type == "response.completed":
                final = event.response
    assert text == REPLY and final is not None and final.output_text == REPLY
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == REPLY_WORDS
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_WORDS, REPLY_WORDS)
    check_sent(live, streamed=True)
    await check_billed(live, "responses")


async def test_a_messages_tool_call_to_gemini_streamed(live: Live) -> None:
    async with messages_client(live) as sdk:
        async with sdk.messages.stream(
            model=GEMINI,
            max_tokens=200,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[MESSAGES_WEATHER],  # type: ignore[list-item]
        ) as stream:
            message = await stream.get_final_message()
    [block] = message.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    sent = live.fake.requests[-1]["body"]
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    # The fake answers a tool call with 5 output tokens; the prompt is its 6 words.
    recorded = await live.wait_for_call(model=GEMINI, status="success")
    assert (recorded["input_tokens"], recorded["output_tokens"]) == (6, 5)
    assert recorded["credits"] == 6 * INPUT_RATE + 5 * OUTPUT_RATE


async def test_a_responses_tool_call_to_gemini_whole(live: Live) -> None:
    async with responses_client(live) as sdk:
        answer = await sdk.responses.create(
            model=GEMINI,
            input="What is the weather in Paris?",
            tools=[RESPONSES_WEATHER],  # type: ignore[list-item]
        )
    calls = [item for item in answer.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    assert calls[0].arguments.replace(" ", "") == '{"city":"Paris"}'
    recorded = await live.wait_for_call(model=GEMINI, status="success")
    assert (recorded["input_tokens"], recorded["output_tokens"]) == (6, 5)
    assert recorded["credits"] == 6 * INPUT_RATE + 5 * OUTPUT_RATE
