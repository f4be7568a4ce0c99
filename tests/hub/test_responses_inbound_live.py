"""The official `openai` SDK's Responses API (`client.responses`) through a live hub.

Real uvicorn servers on 127.0.0.1: the example fake provider, and the hub in front of it
with three providers on it: `fake` serves the Responses API (the client's bytes pass
through), `chat` is OpenAI-compatible but serves chat completions only (translated to
chat), and `claude` speaks Anthropic Messages (translated). Each call's credits are checked
against the rate and the token counts the fake reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from examples import fake_protocols, fake_responses
from examples.fake_provider import REPLY, count_words
from hub.settings import ProviderSettings, Settings
from tests.conftest import Live, live_hub, make_settings

pytestmark = pytest.mark.anyio

PASS_THROUGH = "fake/gpt-4o-mini"
CHAT_ONLY = "chat/gpt-4o-mini"
ANTHROPIC = "claude/claude-sonnet-4"
MODELS = (PASS_THROUGH, CHAT_ONLY, ANTHROPIC)
INPUT_RATE, OUTPUT_RATE = 10_000, 20_000
WEATHER = {
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


def hub_settings(db_url: str, upstream_url: str) -> Settings:
    """The three providers, all on the one fake."""
    fake = ProviderSettings("fake", "openai", upstream_url + "/v1", ("sk-up",), responses_api=True)
    chat = ProviderSettings("chat", "openai", upstream_url + "/v1", ("sk-up",))
    return make_settings(
        db_url,
        provider="claude",
        kind="anthropic",
        base_url=upstream_url,
        more_providers=(fake, chat),
    )


def upstream_tokens(request: dict[str, Any]) -> int:
    """The prompt tokens the fake counted for a request it received (its word counts)."""
    body = request["body"]
    if request["path"].endswith("/responses"):
        return fake_responses.input_tokens(body)
    if request["path"].endswith("/messages"):
        return fake_protocols._words(body.get("messages")) + fake_protocols._words(
            body.get("system")
        )
    return count_words(body.get("messages"))


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    async with live_hub(
        db_url,
        MODELS,
        rates=(INPUT_RATE, OUTPUT_RATE),
        settings_for=lambda url: hub_settings(db_url, url),
    ) as started:
        yield started


async def check_charges(live: Live, expected: list[tuple[int, int]]) -> None:
    """Every call settled, with the tokens the fake counted, at exactly the rate."""
    calls = await live.wait_for_calls(len(expected))
    assert all(c["status"] == "success" for c in calls), calls
    recorded = sorted((c["input_tokens"], c["output_tokens"], c["credits"]) for c in calls)
    assert recorded == sorted((i, o, i * INPUT_RATE + o * OUTPUT_RATE) for i, o in expected), (
        recorded,
        expected,
    )


@pytest.mark.parametrize("model", MODELS)
async def test_a_tool_call_and_its_output_whole(live: Live, model: str) -> None:
    client = AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = await client.responses.create(model=model, input=question, tools=[WEATHER])  # type: ignore[arg-type, list-item]
    expected = [
        (upstream_tokens(live.fake.requests[-1]), first.usage.output_tokens if first.usage else -1)
    ]
    calls = [item for item in first.output if item.type == "function_call"]
    if model == CHAT_ONLY:
        # The fake's chat side never calls tools: a call is made up to send its output back.
        assert first.output_text == REPLY and not calls
        call_id, arguments = "call_made_up", '{"city": "Paris"}'
    else:
        assert len(calls) == 1 and calls[0].name == "get_weather", first.output
        call_id, arguments = calls[0].call_id, calls[0].arguments
        assert first.usage is not None and first.usage.output_tokens == 5
    assert first.id.startswith("resp_") and first.status == "completed"
    # Passed through: the provider's own answer, its id included; else rendered by the hub.
    assert (first.id == "resp_fake") == (model == PASS_THROUGH)

    history: list[Any] = [
        *question,
        {
            "type": "function_call",
            "call_id": call_id,
            "name": "get_weather",
            "arguments": arguments,
        },
        {"type": "function_call_output", "call_id": call_id, "output": "Sunny, 21 C"},
    ]
    second = await client.responses.create(model=model, input=history, tools=[WEATHER])  # type: ignore[list-item]
    await client.close()
    sent = live.fake.requests[-1]
    assert second.output_text == REPLY
    assert second.usage is not None and second.usage.output_tokens == len(REPLY.split())
    assert second.usage.input_tokens == upstream_tokens(sent)
    expected.append((upstream_tokens(sent), second.usage.output_tokens))
    # The tool's output reached the provider in its own protocol.
    assert "Sunny, 21 C" in str(sent["body"])
    assert sent["path"].endswith(
        {
            PASS_THROUGH: "/v1/responses",
            CHAT_ONLY: "/v1/chat/completions",
            ANTHROPIC: "/v1/messages",
        }[model]
    )
    await check_charges(live, expected)


@pytest.mark.parametrize("model", MODELS)
async def test_streamed_events_and_the_stream_helper(live: Live, model: str) -> None:
    client = AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)
    stream = await client.responses.create(
        model=model, input="Say hi", instructions="Be brief.", stream=True
    )
    types, text, final = [], "", None
    async for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.completed":
            final = event.response
    assert text == REPLY and final is not None and final.output_text == REPLY
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert types.count("response.output_text.delta") == len(REPLY.split())
    assert final.usage is not None
    expected = [(upstream_tokens(live.fake.requests[-1]), final.usage.output_tokens)]
    assert final.usage.input_tokens == expected[0][0]

    # The SDK's stream helper, with a tool: the call streams as argument deltas.
    async with client.responses.stream(
        model=model,
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
    ) as helper:
        arguments = ""
        async for event in helper:
            if event.type == "response.function_call_arguments.delta":
                arguments += event.delta
        done = await helper.get_final_response()
    await client.close()
    assert done.usage is not None
    expected.append((upstream_tokens(live.fake.requests[-1]), done.usage.output_tokens))
    calls = [item for item in done.output if item.type == "function_call"]
    if model == CHAT_ONLY:
        assert done.output_text == REPLY and not calls
    else:
        assert [c.name for c in calls] == ["get_weather"] and calls[0].arguments == arguments
        assert arguments.replace(" ", "") == '{"city":"Paris"}'
    await check_charges(live, expected)


async def test_refused_fields_are_named_in_openais_error_shape(live: Live) -> None:
    client = AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model=PASS_THROUGH, input="hi", previous_response_id="resp_earlier"
        )
    await client.close()
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "previous_response_id"
    assert live.fake.requests == []


@pytest.mark.parametrize("model", ["fake/error-429", "claude/error-429"])
async def test_a_providers_refusal_reaches_the_sdk_as_its_own_exception(
    live: Live, model: str
) -> None:
    await live.admin.set_rate(
        model, "chatCompletion", input_rate=INPUT_RATE, output_rate=OUTPUT_RATE
    )
    client = AsyncOpenAI(base_url=live.hub_url + "/v1", api_key=live.key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model=model, input="hi", stream=True)
    await client.close()
    assert caught.value.code == "upstream_rate_limited" and "fake error 429" in caught.value.message
    call = await live.wait_for_call(model=model)
    assert call["status"] == "failed" and call["credits"] == 0, call
