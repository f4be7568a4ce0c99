"""Anthropic Messages behind the OpenAI API: requests, answers, streams, usage, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from tests.conftest import PROVIDER_KEY, Hub, make_settings, start_hub

pytestmark = pytest.mark.anyio

MESSAGES_URL = "http://anthropic.test/v1/messages"
MODEL = "claude/claude-sonnet-4"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def hub(db_url: str, upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    settings = make_settings(
        db_url, provider="claude", kind="anthropic", base_url="http://anthropic.test"
    )
    started = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
    await started.admin.set_rate(
        MODEL, "chatCompletion", input_rate=1_000, output_rate=5_000, cached_rate=100
    )
    yield started
    await started.client.aclose()
    await started.app.shutdown()


def message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4",
        "content": content,
        "stop_reason": stop,
        "usage": {"input_tokens": 10, "output_tokens": 4, **usage},
    }


def events(*items: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in items)


async def test_request_carries_system_tools_history_and_the_hubs_key(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    route = upstream.post(MESSAGES_URL).respond(json=message([{"type": "text", "text": "ok"}]))

    await hub.chat(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, sunny"},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        temperature=0.3,
        stop="END",
    )

    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == PROVIDER_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers  # the client's hub key stays with the hub
    body = json.loads(sent.content)
    assert body["model"] == "claude-sonnet-4"
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 4096  # required by Anthropic, absent from the request
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
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
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"}],
        },
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert (body["temperature"], body["stop_sequences"]) == (0.3, ["END"])


async def test_answer_with_a_tool_call_becomes_an_openai_completion(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    upstream.post(MESSAGES_URL).respond(
        json=message(
            [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_9",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
            stop="tool_use",
            cache_read_input_tokens=30,
            cache_creation_input_tokens=5,
        )
    )

    response = await hub.chat(model=MODEL, tools=[WEATHER_TOOL])

    assert response.status_code == 200
    answer = response.json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    [tool_call] = choice["message"]["tool_calls"]
    assert tool_call["id"] == "toolu_9" and tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Oslo"}
    # OpenAI counts cached tokens inside the prompt; Anthropic reports them apart.
    assert answer["usage"]["prompt_tokens"] == 45
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 30
    [call] = await hub.calls()
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (45, 4, 30)
    assert call["cache_write_tokens"] == 5  # without a cache-write rate, at the input rate
    assert call["credits"] == 15 * 1_000 + 30 * 100 + 4 * 5_000


async def test_cache_writes_are_billed_at_their_own_rate_streamed_or_not(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    await hub.admin.set_rate(
        MODEL,
        "chatCompletion",
        input_rate=1_000,
        output_rate=5_000,
        cached_rate=100,
        cache_write_rate=1_250,  # Anthropic's 1.25x the input price
    )
    usage = {"cache_read_input_tokens": 30, "cache_creation_input_tokens": 200}
    started = {"id": "msg_c", "usage": {"input_tokens": 10, "output_tokens": 1, **usage}}
    upstream.post(MESSAGES_URL).mock(
        side_effect=[
            httpx.Response(200, json=message([{"type": "text", "text": "Hi"}], **usage)),
            httpx.Response(
                200,
                content=events(
                    ("message_start", {"type": "message_start", "message": started}),
                    (
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "end_turn"},
                            "usage": {"output_tokens": 4},
                        },
                    ),
                    ("message_stop", {"type": "message_stop"}),
                ),
                headers={"content-type": "text/event-stream"},
            ),
        ]
    )

    await hub.chat(model=MODEL)
    await hub.chat(model=MODEL, stream=True)

    calls = await hub.calls()
    assert [(c["input_tokens"], c["cache_write_tokens"]) for c in calls] == [(240, 200)] * 2
    # 10 plain input, 30 cache reads, 200 cache writes, 4 output tokens.
    assert [c["credits"] for c in calls] == [10 * 1_000 + 30 * 100 + 200 * 1_250 + 4 * 5_000] * 2


STREAM = events(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {"id": "msg_s", "usage": {"input_tokens": 12, "output_tokens": 1}},
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " there"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_s",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city":'},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ' "Rome"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)


def chunks(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


async def test_stream_becomes_openai_chunks_with_tool_calls_and_is_billed(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    upstream.post(MESSAGES_URL).respond(
        content=STREAM, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(model=MODEL, stream=True, tools=[WEATHER_TOOL])

    assert response.text.endswith("data: [DONE]\n\n")
    out = chunks(response.text)
    deltas = [c["choices"][0]["delta"] for c in out if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Hello there"
    calls = [t for d in deltas for t in d.get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_s" and calls[0]["function"]["name"] == "get_weather"
    assert "".join(t["function"]["arguments"] for t in calls) == '{"city": "Rome"}'
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("usage" not in c for c in out)  # not asked for
    [call] = await hub.calls()
    assert (call["input_tokens"], call["output_tokens"], call["status"]) == (12, 9, "success")
    assert call["credits"] == 12 * 1_000 + 9 * 5_000


async def test_stream_hands_usage_to_a_client_that_asks(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    upstream.post(MESSAGES_URL).respond(
        content=STREAM, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(model=MODEL, stream=True, stream_options={"include_usage": True})

    last = chunks(response.text)[-1]
    assert last["choices"] == [] and last["usage"]["prompt_tokens"] == 12
    assert last["usage"]["completion_tokens"] == 9


async def test_an_error_event_mid_stream_reaches_the_client_and_fails_the_call(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    broken = STREAM.split(b"event: content_block_stop")[0] + events(
        (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    )
    upstream.post(MESSAGES_URL).respond(
        content=broken, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(model=MODEL, stream=True)

    assert chunks(response.text)[-1]["error"]["message"] == "Overloaded"
    assert "[DONE]" not in response.text
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["error_code"] == "upstream_error"
    assert call["input_tokens"] == 12  # what was used so far is still recorded


@pytest.mark.parametrize(("status", "expected"), [(529, 529), (400, 400), (401, 502)])
async def test_upstream_errors_are_mapped(
    hub: Hub, upstream: respx.MockRouter, status: int, expected: int
) -> None:
    upstream.post(MESSAGES_URL).respond(
        status,
        json={
            "type": "error",
            "error": {"type": "some_error", "message": f"anthropic says {status}"},
        },
    )

    response = await hub.chat(model=MODEL)

    assert response.status_code == expected
    if expected != 502:
        assert f"anthropic says {status}" in response.json()["error"]["message"]
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["credits"] == 0


async def test_embeddings_are_not_offered(hub: Hub) -> None:
    await hub.admin.set_rate("claude/embed", "embedding", input_rate=1, output_rate=0)

    response = await hub.client.post("/v1/embeddings", json={"model": "claude/embed", "input": "x"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_call_type"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": None, "tool_calls": ["not-an-object"]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/a.png"}]}],
    ],
)
async def test_requests_that_cannot_be_translated_are_a_400(
    hub: Hub, upstream: respx.MockRouter, messages: list[Any]
) -> None:
    route = upstream.post(MESSAGES_URL).respond(json=message([{"type": "text", "text": "x"}]))

    response = await hub.chat(model=MODEL, messages=messages)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert not route.called


async def test_provider_keys_are_scrubbed_from_stream_errors(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    leaky = events(
        (
            "error",
            {
                "type": "error",
                "error": {"type": "authentication_error", "message": f"bad key {PROVIDER_KEY}"},
            },
        )
    )
    upstream.post(MESSAGES_URL).respond(
        content=leaky, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(model=MODEL, stream=True)

    assert PROVIDER_KEY not in response.text
    [call] = await hub.calls()
    assert PROVIDER_KEY not in str(call["error_message"])


async def test_a_stream_cut_off_after_its_partial_usage_is_billed_for_what_it_delivered(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    # message_start reports output_tokens=1; the stream breaks before message_delta.
    text = "word " * 400  # ~2000 characters, ~500 tokens
    cut = events(
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "m", "usage": {"input_tokens": 12, "output_tokens": 1}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
        ),
    )
    upstream.post(MESSAGES_URL).respond(content=cut, headers={"content-type": "text/event-stream"})

    await hub.chat(model=MODEL, stream=True)

    [call] = await hub.calls()
    assert call["usage_estimated"] is True and call["input_tokens"] == 12
    assert call["output_tokens"] >= 400  # not the 1 of the partial report


async def test_cache_marks_reach_anthropic_on_system_parts_messages_and_tools(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    route = upstream.post(MESSAGES_URL).respond(json=message([{"type": "text", "text": "ok"}]))
    ephemeral = {"type": "ephemeral"}

    await hub.chat(
        model=MODEL,
        messages=[
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "A long manual.", "cache_control": ephemeral},
                    {"type": "text", "text": "Be brief."},
                ],
            },
            {"role": "user", "content": "The contract text.", "cache_control": ephemeral},
        ],
        tools=[{**WEATHER_TOOL, "cache_control": ephemeral}],
    )

    sent = json.loads(route.calls.last.request.content)
    assert sent["system"] == [
        {"type": "text", "text": "A long manual.", "cache_control": ephemeral},
        {"type": "text", "text": "Be brief."},
    ]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "The contract text.", "cache_control": ephemeral}
    ]
    assert sent["tools"][0]["cache_control"] == ephemeral
