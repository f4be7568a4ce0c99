"""Gemini's own API routes, in process, against a mocked OpenAI-compatible upstream: what a
Gemini request carries to the provider, what it refuses by name, the answer and stream in
Gemini's shape, errors in Google's shape, and the client format on every call record."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import httpx
import pytest
import respx

from hub.cli import _calls_list
from hub.settings import ProviderSettings
from middleware.auth import QUERY_KEY_FILTER
from middleware.money import to_units
from tests.conftest import PROVIDER_KEY, UPSTREAM, USER, Hub, make_settings, start_hub
from tests.hub.test_proxy import completion, sse

pytestmark = pytest.mark.anyio

MODEL = "mock/gpt-4o-mini"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"


def turn(text: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def google_error(response: httpx.Response, status: int, rpc: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["status"]) == (status, rpc)
    return error


def sent(mock: respx.MockRouter) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(mock.calls.last.request.content)
    return body


async def test_every_generation_field_is_carried(hub: Hub, mock_upstream: respx.MockRouter) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    body = {
        **turn("hi"),
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 64,
            "stopSequences": ["END"],
            "candidateCount": 2,
            "seed": 7,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.3,
            "responseMimeType": "application/json",
            "responseSchema": {
                "type": "OBJECT",
                "properties": {"n": {"type": "INTEGER", "nullable": True}},
                "propertyOrdering": ["n"],
            },
            "thinkingConfig": {"thinkingBudget": 3000, "includeThoughts": True},
        },
    }
    response = await hub.client.post(GENERATE, json=body)
    assert response.status_code == 200, response.text
    upstream = sent(mock_upstream)
    assert upstream["messages"] == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": "hi"},
    ]
    assert {k: v for k, v in upstream.items() if k not in ("messages", "model")} == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["END"],
        "n": 2,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.3,
        # The OpenAPI-style schema as JSON Schema.
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "response",
                "schema": {
                    "type": "object",
                    "properties": {"n": {"type": ["integer", "null"]}},
                },
            },
        },
        "reasoning_effort": "low",  # 3000 tokens: within the budget the hub gives "low"
        "stream": False,
    }


async def test_the_answer_in_gemini_shape(hub: Hub, mock_upstream: respx.MockRouter) -> None:
    answer = completion(9, 3)
    answer["choices"][0]["message"]["tool_calls"] = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    answer["choices"][0]["finish_reason"] = "tool_calls"
    mock_upstream.post("/chat/completions").respond(json=answer)
    response = await hub.client.post(GENERATE, json=turn("hi"))
    body = response.json()
    assert body["candidates"] == [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Hi there!"},
                    {"functionCall": {"name": "f", "args": {"a": 1}, "id": "c1"}},
                ],
            },
            "index": 0,
            "finishReason": "STOP",
        }
    ]
    assert body["usageMetadata"] == {
        "promptTokenCount": 9,
        "candidatesTokenCount": 3,
        "totalTokenCount": 12,
    }
    assert body["modelVersion"] == MODEL


async def test_a_stream_in_gemini_events(hub: Hub, mock_upstream: respx.MockRouter) -> None:
    chunks = [
        {"id": "x", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"id": "x", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"id": "x", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
        "[DONE]",
    ]
    mock_upstream.post("/chat/completions").respond(
        content=sse(*chunks), headers={"content-type": "text/event-stream"}
    )
    response = await hub.client.post(STREAM, json=turn("hi"))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    texts = [p["text"] for e in events for c in e["candidates"] for p in c["content"]["parts"]]
    assert "".join(texts) == "Hello"
    assert all("usageMetadata" not in e for e in events[:-1])
    assert events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert events[-1]["usageMetadata"]["totalTokenCount"] == 6
    assert sent(mock_upstream)["stream"] is True
    [call] = await hub.calls()
    assert (call["input_tokens"], call["output_tokens"], call["stream"]) == (4, 2, True)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {**turn("hi"), "generationConfig": {"responseLogprobs": True}},
            "generationConfig.responseLogprobs",
        ),
        (
            {**turn("hi"), "generationConfig": {"responseModalities": ["IMAGE"]}},
            "generationConfig.responseModalities",
        ),
        ({**turn("hi"), "toolConfig": {"retrievalConfig": {}}}, "toolConfig.retrievalConfig"),
        ({**turn("hi"), "labels": {"a": "b"}}, "labels"),
        (
            {"contents": [{"role": "user", "parts": [{"executableCode": {"code": "1"}}]}]},
            "contents[0].parts[0]",
        ),
        # Only a Gemini provider honours these: refused for an OpenAI-compatible one.
        (
            {
                **turn("hi"),
                "safetySettings": [
                    {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}
                ],
            },
            "safetySettings",
        ),
        ({**turn("hi"), "generationConfig": {"topK": 3}}, "generationConfig.topK"),
        ({**turn("hi"), "tools": [{"googleSearch": {}}]}, "tools[0].googleSearch"),
    ],
)
async def test_what_cannot_be_carried_is_refused_by_name(
    hub: Hub, mock_upstream: respx.MockRouter, body: dict[str, Any], param: str
) -> None:
    route = mock_upstream.post("/chat/completions").respond(json=completion())
    response = await hub.client.post(GENERATE, json=body)
    error = google_error(response, 400, "INVALID_ARGUMENT")
    assert param in error["message"] and "(unsupported_parameter)" in error["message"]
    assert error["details"][0]["reason"] == "unsupported_parameter"
    assert not route.called
    assert sum(c["credits"] for c in await hub.calls()) == 0


async def test_gemini_only_fields_drop_where_the_operator_says(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    provider = ProviderSettings(
        "mock", "openai", UPSTREAM, (PROVIDER_KEY,), ("gpt-4o-mini",), drop_unsupported=True
    )
    settings = make_settings(db_url, providers={"mock": provider})
    started = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    try:
        mock_upstream.post("/chat/completions").respond(json=completion())
        body = {**turn("hi"), "safetySettings": [{"category": "X", "threshold": "BLOCK_NONE"}]}
        response = await started.client.post(GENERATE, json=body)
        assert response.status_code == 200, response.text
        assert "safetySettings" not in json.dumps(sent(mock_upstream))
    finally:
        await started.client.aclose()
        await started.app.shutdown()


async def test_errors_in_googles_shape(hub: Hub, mock_upstream: respx.MockRouter) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://h"
    ) as anonymous:
        missing = await anonymous.post(GENERATE, json=turn("hi"))
        google_error(missing, 401, "UNAUTHENTICATED")
        wrong = await anonymous.post(GENERATE, json=turn("hi"), headers={"x-goog-api-key": "nope"})
        assert "x-goog-api-key" in google_error(wrong, 401, "UNAUTHENTICATED")["message"]
        counted = await anonymous.post(f"/v1beta/models/{MODEL}:countTokens", json=turn("hi"))
        google_error(counted, 401, "UNAUTHENTICATED")
    unknown = await hub.client.post("/v1beta/models/nope/none:generateContent", json=turn("hi"))
    google_error(unknown, 404, "NOT_FOUND")
    bad = await hub.client.post(GENERATE, json={"contents": "not a list"})
    google_error(bad, 400, "INVALID_ARGUMENT")
    await hub.admin.grant(USER, -to_units(10))
    broke = await hub.client.post(GENERATE, json=turn("hi"))
    error = google_error(broke, 402, "FAILED_PRECONDITION")
    assert "insufficient_credits" in error["message"]


async def test_the_client_format_is_on_every_call_record(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion())
    assert (await hub.chat()).status_code == 200
    aigne = {
        "input": {"messages": [{"role": "user", "content": "hi"}], "modelOptions": {"model": MODEL}}
    }
    assert (await hub.client.post("/api/v2/chat", json=aigne)).status_code == 200
    assert (await hub.client.post(GENERATE, json=turn("hi"))).status_code == 200
    calls = await hub.calls()
    assert sorted(c["client_format"] for c in calls) == ["aigne", "gemini", "openai"]
    assert [c["client_format"] for c in await hub.calls(client_format="gemini")] == ["gemini"]
    # The calls API filters by it too.
    listed = await hub.client.get("/api/user/calls", params={"client_format": "aigne"})
    assert [c["client_format"] for c in listed.json()["data"]] == ["aigne"]


async def test_the_calls_table_and_cli_show_the_client_format(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion())
    assert (await hub.chat()).status_code == 200
    assert (await hub.client.post(GENERATE, json=turn("hi"))).status_code == 200
    page = (await hub.client.get("/dashboard/calls")).text
    assert "<th>Format</th>" in page and "<td>gemini</td>" in page and "<td>openai</td>" in page
    args = argparse.Namespace(
        user=None, model=None, status=None, client_format="gemini", limit=20, json=False
    )
    [row] = await _calls_list(hub.admin, args)
    assert row["client_format"] == "gemini" and row["model"] == MODEL


def test_a_key_in_the_query_is_masked_in_the_access_log() -> None:
    # As uvicorn logs a request: client, method, path with query, HTTP version, status.
    path = "/v1beta/models/m:generateContent?alt=sse&key=ahk_secret123"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("ip", "POST", path, "1.1", 200),
        None,
    )
    assert QUERY_KEY_FILTER.filter(record)
    line = record.getMessage()
    assert "ahk_secret123" not in line and "?alt=sse&key=***" in line


async def test_an_error_mid_stream_is_an_error_chunk_the_sdk_raises(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    chunks = [
        {"id": "x", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"error": {"message": f"overloaded, key {PROVIDER_KEY}", "type": "server_error"}},
    ]
    mock_upstream.post("/chat/completions").respond(
        content=sse(*chunks), headers={"content-type": "text/event-stream"}
    )
    response = await hub.client.post(STREAM, json=turn("hi"))
    last = response.text.strip().splitlines()[-1]
    # google-genai raises on a chunk that starts `{"error":`, by its numeric code.
    assert last.startswith('data: {"error":{"code":502,')
    error = json.loads(last[6:])["error"]
    assert error["status"] == "UNAVAILABLE" and PROVIDER_KEY not in error["message"]
    [call] = await hub.calls()
    assert (call["status"], call["error_code"], call["client_format"]) == (
        "failed",
        "upstream_error",
        "gemini",
    )


async def test_every_v1beta_path_answers_in_googles_shape(hub: Hub) -> None:
    # No model in the path (the route's pattern needs one), or a Gemini path not served.
    for path in ("/v1beta/models/:generateContent", "/v1beta/models/:countTokens", "/v1beta/files"):
        google_error(await hub.client.post(path, json=turn("hi")), 404, "NOT_FOUND")
    # A line break in the model: a bad model, said in Google's shape too.
    broken = await hub.client.post("/v1beta/models/a%0D%0Ab:generateContent", json=turn("hi"))
    google_error(broken, 400, "INVALID_ARGUMENT")


async def test_to_a_gemini_provider_the_bytes_pass_both_ways(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    settings = make_settings(db_url, kind="gemini")  # `mock` speaks Gemini now
    started = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    events = [
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
            "usageMetadata": {"promptTokenCount": 7},
        },
        {
            "error": {
                "code": 503,
                "message": f"overloaded for {PROVIDER_KEY}",
                "status": "UNAVAILABLE",
            }
        },
    ]
    route = mock_upstream.post("/models/gpt-4o-mini:streamGenerateContent").respond(
        content=b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events),
        headers={"content-type": "text/event-stream"},
    )
    body = json.dumps({**turn("hi"), "safetySettings": [{"category": "X", "threshold": "OFF"}]})
    try:
        response = await started.client.post(
            STREAM, content=body, headers={"content-type": "application/json"}
        )
        calls = await started.calls()
    finally:
        await started.client.aclose()
        await started.app.shutdown()
    # The client's own bytes went upstream (safetySettings and all), with the hub's key.
    sent_request = route.calls.last.request
    assert sent_request.content == body.encode()
    assert sent_request.headers["x-goog-api-key"] == PROVIDER_KEY
    assert sent_request.url.params["alt"] == "sse"
    first, last = [line for line in response.text.split("\r\n\r\n") if line]
    assert json.loads(first[6:]) == events[0]  # as the provider sent it
    error = json.loads(last[6:])["error"]
    assert error["code"] == 502 and PROVIDER_KEY not in error["message"]
    [call] = calls
    assert (call["status"], call["input_tokens"], call["client_format"]) == ("failed", 7, "gemini")
    assert call["credits"] > 0  # the prompt reached the provider: it is paid for
