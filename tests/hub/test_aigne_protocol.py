"""The AIGNE Hub client protocol: /api/v2/chat and /api/v2/image, discovery and listings."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx

from hub.dialects.aigne import AIGNE_HUB_DID
from middleware.money import to_credits, to_units
from tests.conftest import USER, Hub
from tests.hub.test_proxy import STREAM, chunk, completion, sse

pytestmark = pytest.mark.anyio


def chat_body(streaming: bool = False, **input_extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "input": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hi"},
            ],
            "modelOptions": {"model": "mock/gpt-4o-mini", "temperature": 0.5},
            "outputFileType": "url",
            **input_extra,
        },
        "agent": "$CHAT_MODEL",
        "options": {"userContext": {}, "memories": []},
    }
    if streaming:
        body["options"]["streaming"] = True
    return body


def frames(text: str) -> list[tuple[str | None, Any]]:
    """(event name, data) for each SSE frame."""
    out = []
    for block in text.strip().split("\n\n"):
        event, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        out.append((event, data))
    return out


async def test_a_plain_chat_answers_in_the_sdks_shape_with_its_credits(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    route = mock_upstream.post("/chat/completions").respond(json=completion(9, 3))

    response = await hub.client.post(
        "/api/v2/chat", json=chat_body(), headers={"x-aigne-hub-client-did": "did:app:x"}
    )

    assert response.status_code == 200
    sent = json.loads(route.calls.last.request.content)
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.5
    assert "stream_options" not in sent
    answer = response.json()
    assert answer["text"] == "Hi there!" and answer["model"] == "mock/gpt-4o-mini"
    usage = answer["usage"]
    assert (usage["inputTokens"], usage["outputTokens"]) == (9, 3)
    [call] = await hub.calls()
    assert call["app_did"] == "did:app:x" and call["credits"] == 9 * 10_000 + 3 * 20_000
    assert Decimal(str(usage["aigneHubCredits"])) == to_credits(call["credits"])


async def test_a_streamed_chat_sends_text_frames_then_model_and_usage_and_no_done(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(
        content=STREAM, headers={"content-type": "text/event-stream"}
    )

    response = await hub.client.post("/api/v2/chat", json=chat_body(streaming=True))

    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    got = frames(response.text)
    texts = [d["delta"]["text"]["text"] for _, d in got if "text" in d["delta"]]
    assert "".join(texts) == "Hi there"
    *_, (_, last) = got
    assert last["delta"]["json"]["model"] == "mock/gpt-4o-mini"
    assert last["delta"]["json"]["usage"]["inputTokens"] == 5
    assert last["delta"]["json"]["usage"]["aigneHubCredits"] > 0
    [call] = await hub.calls()
    assert call["stream"] is True and call["output_tokens"] == 2


async def test_streamed_tool_calls_arrive_whole_with_object_arguments(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    def tool_chunk(arguments: str, name: str | None = None) -> dict[str, Any]:
        base = chunk(None)
        function = {"arguments": arguments, **({"name": name} if name else {})}
        base["choices"] = [
            {
                "index": 0,
                "finish_reason": None,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1" if name else None,
                            "type": "function",
                            "function": function,
                        }
                    ]
                },
            }
        ]
        return base

    stream = sse(
        tool_chunk("", "get_weather"),
        tool_chunk('{"city":'),
        tool_chunk(' "Oslo"}'),
        chunk(None, {"prompt_tokens": 5, "completion_tokens": 7}),
        "[DONE]",
    )
    mock_upstream.post("/chat/completions").respond(
        content=stream, headers={"content-type": "text/event-stream"}
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]

    response = await hub.client.post(
        "/api/v2/chat", json=chat_body(streaming=True, tools=tools, toolChoice="auto")
    )

    calls = [
        d["delta"]["json"]["toolCalls"]
        for _, d in frames(response.text)
        if "toolCalls" in d["delta"].get("json", {})
    ]
    assert calls == [
        [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
            }
        ]
    ]


async def test_agent_and_tool_messages_are_read_into_openai_history(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    route = mock_upstream.post("/chat/completions").respond(json=completion())
    body = chat_body()
    body["input"]["messages"] += [
        {
            "role": "agent",
            "content": "",
            "toolCalls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                }
            ],
        },
        {"role": "tool", "toolCallId": "c1", "content": {"temp": 3}},
    ]

    await hub.client.post("/api/v2/chat", json=body)

    sent = json.loads(route.calls.last.request.content)["messages"]
    assert sent[2]["role"] == "assistant"
    assert json.loads(sent[2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert sent[3] == {"role": "tool", "content": '{"temp": 3}', "tool_call_id": "c1"}


async def test_an_error_mid_stream_is_an_error_event(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    async def broken() -> Any:
        yield sse(chunk("Hi"))
        raise httpx.ReadError("reset")

    mock_upstream.post("/chat/completions").mock(
        side_effect=lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=broken()
        )
    )

    response = await hub.client.post("/api/v2/chat", json=chat_body(streaming=True))

    event, data = frames(response.text)[-1]
    assert event == "error" and "broke off" in data["message"]


async def test_refusals_are_http_errors_the_sdk_reads(hub: Hub) -> None:
    await hub.admin.grant(USER, -to_units(10))

    response = await hub.client.post("/api/v2/chat", json=chat_body())

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["type"] == "insufficient_credits" and "Insufficient" in error["message"]


async def test_a_body_that_is_not_the_sdks_shape_is_a_400(hub: Hub) -> None:
    response = await hub.client.post("/api/v2/chat", json={"input": {"messages": []}})
    assert response.status_code == 400
    assert "modelOptions.model" in response.json()["error"]["message"]


async def test_images_answer_in_the_sdks_shape(hub: Hub, mock_upstream: respx.MockRouter) -> None:
    await hub.admin.set_rate(
        "mock/gpt-image-1",
        "imageGeneration",
        input_rate=0,
        output_rate=0,
        image_rate=to_units("0.04"),
    )
    route = mock_upstream.post("/images/generations").respond(
        json={"created": 1, "data": [{"url": "http://img/1.png"}]}
    )

    response = await hub.client.post(
        "/api/v2/image",
        json={"input": {"prompt": "a cat", "modelOptions": {"model": "mock/gpt-image-1"}}},
    )

    assert json.loads(route.calls.last.request.content)["prompt"] == "a cat"
    answer = response.json()
    assert answer["images"] == [{"type": "url", "url": "http://img/1.png"}]
    assert answer["usage"]["aigneHubCredits"] == 0.04


async def test_discovery_and_model_listing_need_no_key(hub: Hub) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://hub.test"
    ) as anonymous:
        blocklet = (await anonymous.get("/__blocklet__.js", params={"type": "json"})).json()
        models = (await anonymous.get("/api/ai/models", params={"type": "chat"})).json()
        images = (await anonymous.get("/api/ai/models", params={"type": "image"})).json()

    [mount] = [m for m in blocklet["componentMountPoints"] if m["did"] == AIGNE_HUB_DID]
    assert mount["mountPoint"] == "/"
    assert [m["model"] for m in models] == ["mock/gpt-4o-mini"]
    assert models[0]["type"] == "chat" and models[0]["input_credits_per_token"] == "0.000001"
    assert images == []


async def test_status_says_whether_the_caller_can_use_a_model(hub: Hub) -> None:
    ok = (await hub.client.get("/api/v2/status", params={"model": "mock/gpt-4o-mini"})).json()
    unpriced = (await hub.client.get("/api/v2/status", params={"model": "mock/x"})).json()
    await hub.admin.grant(USER, -to_units(10))
    broke = (await hub.client.get("/api/v2/status", params={"model": "mock/gpt-4o-mini"})).json()

    assert ok == {"available": True}
    assert unpriced["available"] is False and "rate" in unpriced["error"]
    assert broke["available"] is False and "credits" in broke["error"]


async def test_an_answer_the_hub_cannot_render_is_a_502_and_not_charged(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    odd = completion()
    odd["choices"] = [None]
    mock_upstream.post("/chat/completions").respond(json=odd)

    response = await hub.client.post("/api/v2/chat", json=chat_body())

    assert response.status_code == 502
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["credits"] == 0
