"""Google Gemini behind the OpenAI API: requests, answers, streams, usage, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import select

from hub.store.schema import accounts
from tests.conftest import PROVIDER_KEY, Hub, make_settings, start_hub
from tests.hub.providers.test_anthropic import WEATHER_TOOL, chunks

pytestmark = pytest.mark.anyio

BASE = "http://gemini.test/v1beta/models/gemini-2.5-flash"
MODEL = "gem/gemini-2.5-flash"


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def hub(db_url: str, upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    settings = make_settings(db_url, provider="gem", kind="gemini", base_url="http://gemini.test")
    started = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
    await started.admin.set_rate(MODEL, "chatCompletion", input_rate=1_000, output_rate=5_000)
    yield started
    await started.client.aclose()
    await started.app.shutdown()


def answer(parts: list[dict[str, Any]], finish: str = "STOP", **usage: int) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish}],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 3, **usage},
        "responseId": "resp-1",
    }


async def test_request_carries_system_tools_history_and_the_hubs_key(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    route = upstream.post(f"{BASE}:generateContent").respond(json=answer([{"text": "ok"}]))

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
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
        ],
        tools=[
            {
                **WEATHER_TOOL,
                "function": {
                    **WEATHER_TOOL["function"],
                    "parameters": {
                        **WEATHER_TOOL["function"]["parameters"],
                        "additionalProperties": False,
                    },
                },
            }
        ],
        tool_choice="auto",
        max_tokens=100,
    )

    sent = route.calls.last.request
    assert sent.headers["x-goog-api-key"] == PROVIDER_KEY
    assert "authorization" not in sent.headers
    body = json.loads(sent.content)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 18}}}],
        },
    ]
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert "additionalProperties" not in declaration["parameters"]  # Gemini rejects it
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert body["generationConfig"] == {"maxOutputTokens": 100}


async def test_answer_with_a_function_call_becomes_an_openai_completion(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    upstream.post(f"{BASE}:generateContent").respond(
        json=answer(
            [
                {"text": "thinking...", "thought": True},
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
            ],
            thoughtsTokenCount=20,
            cachedContentTokenCount=4,
        )
    )

    response = await hub.chat(model=MODEL, tools=[WEATHER_TOOL])

    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."  # thoughts are not the answer
    [tool_call] = choice["message"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Oslo"}
    [call] = await hub.calls()
    # Thinking tokens are billed as output, as Google bills them.
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (8, 23, 4)
    assert call["credits"] == 8 * 1_000 + 23 * 5_000


def sse(*payloads: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(p)}\r\n\r\n".encode() for p in payloads)


STREAM = sse(
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
        "usageMetadata": {"promptTokenCount": 8},
        "responseId": "r",
    },
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]},
    {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 6},
    },
)


async def test_stream_becomes_openai_chunks_and_is_billed(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    route = upstream.post(f"{BASE}:streamGenerateContent").respond(
        content=STREAM, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(model=MODEL, stream=True, stream_options={"include_usage": True})

    assert route.calls.last.request.url.params["alt"] == "sse"
    assert response.text.endswith("data: [DONE]\n\n")
    out = chunks(response.text)
    deltas = [c["choices"][0]["delta"] for c in out if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    [tool_call] = [t for d in deltas for t in d.get("tool_calls", [])]
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Rome"}
    assert [c["choices"][0]["finish_reason"] for c in out if c["choices"]][-1] == "tool_calls"
    assert out[-1]["usage"]["completion_tokens"] == 6
    [call] = await hub.calls()
    assert (call["input_tokens"], call["output_tokens"]) == (8, 6)


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (429, None, 429),
        (400, None, 400),
        # A 403 about the request (a model this key may not use) is the caller's to read; one
        # about the key (its project suspended) is the hub's problem, not the caller's.
        (403, None, 403),
        (403, "CONSUMER_SUSPENDED", 502),
        (400, "API_KEY_INVALID", 502),
    ],
)
async def test_upstream_errors_are_mapped(
    hub: Hub, upstream: respx.MockRouter, status: int, reason: str | None, expected: int
) -> None:
    error = {"code": status, "message": f"gemini says {status}", "status": "X"}
    if reason is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    upstream.post(f"{BASE}:generateContent").respond(status, json={"error": error})

    response = await hub.chat(model=MODEL)

    assert response.status_code == expected
    if expected != 502:
        assert f"gemini says {status}" in response.json()["error"]["message"]
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["credits"] == 0


async def test_embeddings_go_to_batch_embed_and_their_usage_is_estimated(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    await hub.admin.set_rate("gem/text-embedding-004", "embedding", input_rate=100, output_rate=0)
    route = upstream.post(
        "http://gemini.test/v1beta/models/text-embedding-004:batchEmbedContents"
    ).respond(json={"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]})

    response = await hub.client.post(
        "/v1/embeddings",
        json={"model": "gem/text-embedding-004", "input": ["hello world", "good morning"]},
    )

    sent = json.loads(route.calls.last.request.content)
    assert [r["content"]["parts"][0]["text"] for r in sent["requests"]] == [
        "hello world",
        "good morning",
    ]
    assert sent["requests"][0]["model"] == "models/text-embedding-004"
    answer = response.json()
    assert [d["embedding"] for d in answer["data"]] == [[0.1, 0.2], [0.3, 0.4]]
    [call] = await hub.calls()
    assert call["usage_estimated"] is True and call["input_tokens"] > 0
    assert call["credits"] == call["input_tokens"] * 100
    assert answer["usage"]["prompt_tokens"] == call["input_tokens"]


async def test_embeddings_come_base64_encoded_when_asked(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    import base64
    import struct

    await hub.admin.set_rate("gem/text-embedding-004", "embedding", input_rate=1, output_rate=0)
    upstream.post("http://gemini.test/v1beta/models/text-embedding-004:batchEmbedContents").respond(
        json={"embeddings": [{"values": [0.5, -1.25]}]}
    )

    response = await hub.client.post(
        "/v1/embeddings",
        json={"model": "gem/text-embedding-004", "input": "hi", "encoding_format": "base64"},
    )

    encoded = response.json()["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -1.25)


async def test_token_arrays_cannot_be_embedded_by_gemini(hub: Hub) -> None:
    await hub.admin.set_rate("gem/text-embedding-004", "embedding", input_rate=1, output_rate=0)

    response = await hub.client.post(
        "/v1/embeddings", json={"model": "gem/text-embedding-004", "input": [1, 2, 3]}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    # A request that cannot be translated ends before going upstream: failed, free, and
    # its credit hold released.
    [call] = await hub.calls()
    assert (call["status"], call["credits"]) == ("failed", 0)
    rows = await hub.store.read(select(accounts.c.held))
    assert sum(int(row["held"]) for row in rows) == 0


async def test_images_go_to_imagen_predict_and_are_billed_per_image(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    await hub.admin.set_rate(
        "gem/imagen-4.0-generate-001",
        "imageGeneration",
        input_rate=0,
        output_rate=0,
        image_rate=400_000_000,  # 0.04 credits an image
    )
    picture = {"bytesBase64Encoded": "aW1hZ2U=", "mimeType": "image/png"}
    route = upstream.post(
        "http://gemini.test/v1beta/models/imagen-4.0-generate-001:predict"
    ).respond(json={"predictions": [picture, picture]})

    response = await hub.client.post(
        "/v1/images/generations",
        json={
            "model": "gem/imagen-4.0-generate-001",
            "prompt": "a lighthouse at dusk",
            "n": 2,
            "size": "1792x1024",
        },
    )

    sent = json.loads(route.calls.last.request.content)
    assert sent == {
        "instances": [{"prompt": "a lighthouse at dusk"}],
        "parameters": {"sampleCount": 2, "aspectRatio": "16:9"},
    }
    assert route.calls.last.request.headers["x-goog-api-key"] == PROVIDER_KEY
    assert [d["b64_json"] for d in response.json()["data"]] == ["aW1hZ2U="] * 2
    [call] = await hub.calls()
    assert (call["image_count"], call["credits"]) == (2, 2 * 400_000_000)
