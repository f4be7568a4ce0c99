"""The proxy through the whole stack, with the upstream mocked by respx."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx

from middleware.money import to_credits
from tests.conftest import PROVIDER_KEY, USER, Hub, make_settings, start_hub

pytestmark = pytest.mark.anyio


def completion(prompt: int = 9, completion: int = 3, cached: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi there!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def sse(*payloads: Any) -> bytes:
    out = b""
    for payload in payloads:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        out += f"data: {data}\n\n".encode()
    return out


def chunk(text: str | None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    choices = (
        [] if text is None else [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    )
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": choices,
        "usage": usage,
    }


STREAM_USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
STREAM = sse(chunk("Hi"), chunk(" there"), chunk(None, STREAM_USAGE), "[DONE]")


async def test_chat_is_billed_exactly_for_known_usage_and_rates(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    await hub.admin.set_rate(
        "mock/gpt-4o-mini",
        "chatCompletion",
        input_rate=12_345,
        output_rate=67_891,
        cached_rate=1_000,
    )
    mock_upstream.post("/chat/completions").respond(json=completion(1000, 250, cached=400))

    response = await hub.chat()

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hi there!"
    [call] = await hub.calls()
    expected = 600 * 12_345 + 400 * 1_000 + 250 * 67_891
    assert call["status"] == "success"
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (1000, 250, 400)
    assert call["credits"] == expected
    ledger = await hub.admin.ledger(USER)
    assert ledger["metered"] == expected
    assert to_credits(ledger["balance"]) == Decimal(10) - to_credits(expected)


async def test_upstream_request_is_built_right_and_keys_stay_on_their_side(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    route = mock_upstream.post("/chat/completions").respond(json=completion())

    await hub.chat(temperature=0.2)

    sent = route.calls.last.request
    body = json.loads(sent.content)
    assert body["model"] == "gpt-4o-mini"  # the provider prefix is the hub's business
    assert body["temperature"] == 0.2
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert hub.key not in sent.headers.get("authorization", "")
    assert "cookie" not in sent.headers


async def test_stream_without_usage_asked_is_still_billed_and_usage_chunk_hidden(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    route = mock_upstream.post("/chat/completions").respond(
        content=STREAM, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(stream=True)

    assert response.headers["content-type"].startswith("text/event-stream")
    sent = json.loads(route.calls.last.request.content)
    assert sent["stream_options"] == {"include_usage": True}
    assert '"usage": {' not in response.text and '"choices": []' not in response.text
    assert response.text.endswith("data: [DONE]\n\n")
    assert response.text.count("data: ") == 3
    [call] = await hub.calls()
    assert (call["input_tokens"], call["output_tokens"], call["stream"]) == (5, 2, True)
    assert call["credits"] == 5 * 10_000 + 2 * 20_000


async def test_stream_with_usage_asked_passes_usage_chunk(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(
        content=STREAM, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(stream=True, stream_options={"include_usage": True})

    assert response.content == STREAM
    [call] = await hub.calls()
    assert call["output_tokens"] == 2


async def test_failing_upstream_gives_failed_call_and_no_charge(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(
        500, json={"error": {"message": "the model overloaded", "type": "server_error"}}
    )

    response = await hub.chat()

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and "the model overloaded" in error["message"]
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["credits"] == 0
    assert call["error_code"] == "upstream_error"
    assert (await hub.admin.ledger(USER))["metered"] == 0


async def test_upstream_client_errors_pass_through_with_their_message(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(
        400, json={"error": {"message": "messages[0].role is invalid"}}
    )

    response = await hub.chat()

    assert response.status_code == 400
    assert "messages[0].role is invalid" in response.json()["error"]["message"]


async def test_rejected_provider_key_is_a_gateway_error_and_never_echoed(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(
        401, json={"error": {"message": f"Incorrect API key provided: {PROVIDER_KEY}"}}
    )

    response = await hub.chat()

    # A 401 would tell the caller their own key is bad; it is the hub's credential.
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"
    assert PROVIDER_KEY not in response.text
    [call] = await hub.calls()
    assert PROVIDER_KEY not in str(call)


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (httpx.ConnectError("refused"), 502, "upstream_unavailable"),
        (httpx.ReadTimeout("slow"), 504, "upstream_timeout"),
        (httpx.ConnectTimeout("slow"), 504, "upstream_timeout"),
    ],
)
async def test_upstream_transport_failures_map_to_gateway_errors(
    hub: Hub, mock_upstream: respx.MockRouter, failure: Exception, status: int, code: str
) -> None:
    mock_upstream.post("/chat/completions").mock(side_effect=failure)

    response = await hub.chat()

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["error_code"] == code and call["credits"] == 0


async def test_upstream_garbage_is_a_502(hub: Hub, mock_upstream: respx.MockRouter) -> None:
    mock_upstream.post("/chat/completions").respond(200, content=b"<html>oops</html>")

    response = await hub.chat()

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_invalid_response"


async def test_embeddings_are_billed_on_input_tokens(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    await hub.admin.set_rate(
        "mock/text-embedding-3-small", "embedding", input_rate=300, output_rate=0
    )
    mock_upstream.post("/embeddings").respond(
        json={
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        }
    )

    response = await hub.client.post(
        "/api/v2/embeddings", json={"model": "mock/text-embedding-3-small", "input": "hello"}
    )

    assert response.status_code == 200
    [call] = await hub.calls()
    assert call["type"] == "embedding" and call["credits"] == 7 * 300


async def test_images_are_billed_per_image(hub: Hub, mock_upstream: respx.MockRouter) -> None:
    await hub.admin.set_rate(
        "mock/gpt-image-1", "imageGeneration", input_rate=0, output_rate=0, image_rate=400_000_000
    )
    mock_upstream.post("/images/generations").respond(
        json={"created": 1, "data": [{"url": "http://x/1.png"}, {"url": "http://x/2.png"}]}
    )

    response = await hub.client.post(
        "/v1/images/generations", json={"model": "mock/gpt-image-1", "prompt": "a cat", "n": 2}
    )

    assert response.status_code == 200
    [call] = await hub.calls()
    assert call["image_count"] == 2 and call["credits"] == 800_000_000


async def test_models_lists_what_the_hub_serves(hub: Hub) -> None:
    response = await hub.client.get("/v1/models")

    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["mock/gpt-4o-mini"]


async def test_health_needs_no_key(hub: Hub) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://hub.test"
    ) as anonymous:
        response = await anonymous.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


async def test_unknown_route_is_a_json_404(hub: Hub) -> None:
    response = await hub.client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_wrong_method_on_a_model_route_is_a_json_405(hub: Hub) -> None:
    response = await hub.client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_upstream_breaking_off_mid_stream_ends_with_an_error_event(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    async def broken_stream() -> Any:
        yield sse(chunk("Hi"))
        raise httpx.ReadError("connection reset by peer")

    mock_upstream.post("/chat/completions").mock(
        side_effect=lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=broken_stream()
        )
    )

    response = await hub.chat(stream=True)

    assert response.status_code == 200  # the status line was sent with the first chunk
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    assert events[0]["choices"][0]["delta"]["content"] == "Hi"
    assert events[-1]["error"]["code"] == "upstream_disconnected"
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["error_code"] == "upstream_disconnected"
    # The chunk delivered before the break is billed, estimated: "Say hi" is ~3 prompt
    # tokens (6 characters and 4 of framing), one content chunk is ~1 output token.
    assert call["usage_estimated"] is True
    assert (call["input_tokens"], call["output_tokens"]) == (3, 1)
    assert call["credits"] == 3 * 10_000 + 1 * 20_000


async def test_browser_origins_get_cors_when_configured(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    settings = make_settings(db_url, cors_origins=("https://chat.example",))
    hub = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    try:
        preflight = await hub.client.options(
            "/v1/chat/completions",
            headers={
                "origin": "https://chat.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://chat.example"
        other = await hub.client.options(
            "/v1/chat/completions",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


async def test_calls_are_attributed_to_the_app_that_made_them(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion())
    _, app_key = await hub.admin.create_key(USER, app_did="did:app:from-key")

    await hub.client.post(
        "/v1/chat/completions",
        headers={"x-aigne-hub-client-did": "did:app:from-header", "x-request-id": "req-42"},
        json={"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    await hub.client.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {app_key}"},
        json={"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )

    by_app = {call["app_did"]: call for call in await hub.calls()}
    assert by_app["did:app:from-header"]["request_id"] == "req-42"
    assert "did:app:from-key" in by_app


async def test_usage_in_an_unterminated_last_event_is_still_billed_and_hidden(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    unterminated = sse(chunk("Hi")) + b"data: " + json.dumps(chunk(None, STREAM_USAGE)).encode()
    mock_upstream.post("/chat/completions").respond(
        content=unterminated, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(stream=True)

    assert '"usage"' not in response.text.replace('"usage": null', "")
    [call] = await hub.calls()
    assert (call["input_tokens"], call["output_tokens"], call["status"]) == (5, 2, "success")


async def test_an_error_after_half_an_event_arrives_clean(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    async def half_then_reset() -> Any:
        yield sse(chunk("Hi")) + b'data: {"id":"c","choi'
        raise httpx.ReadError("connection reset")

    mock_upstream.post("/chat/completions").mock(
        side_effect=lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=half_then_reset()
        )
    )

    response = await hub.chat(stream=True)

    *_, last = [line for line in response.text.splitlines() if line]
    assert json.loads(last[6:])["error"]["code"] == "upstream_disconnected"


async def test_a_stream_without_usage_is_estimated_not_free(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    # A provider that ignores stream_options.include_usage.
    silent = sse(chunk("Hello"), chunk(" big"), chunk(" world"), "[DONE]")
    mock_upstream.post("/chat/completions").respond(
        content=silent, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(stream=True)

    assert response.text.endswith("data: [DONE]\n\n")
    [call] = await hub.calls()
    assert call["status"] == "success" and call["usage_estimated"] is True
    assert (call["input_tokens"], call["output_tokens"]) == (3, 3)


async def test_an_answer_without_usage_is_estimated_not_free(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    answer = completion()
    del answer["usage"]
    answer["choices"][0]["message"]["content"] = "x" * 40
    mock_upstream.post("/chat/completions").respond(json=answer)

    await hub.chat()

    [call] = await hub.calls()
    assert call["usage_estimated"] is True
    assert (call["input_tokens"], call["output_tokens"]) == (3, 10)
    assert call["credits"] == 3 * 10_000 + 10 * 20_000


async def test_a_cut_off_stream_of_big_chunks_is_estimated_by_its_text(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    # Two chunks of 400 characters each: a provider that sends many tokens a chunk.
    silent = sse(chunk("a"), chunk("x" * 400), chunk("y" * 400))
    mock_upstream.post("/chat/completions").respond(
        content=silent, headers={"content-type": "text/event-stream"}
    )

    await hub.chat(stream=True)

    [call] = await hub.calls()
    assert call["usage_estimated"] is True
    assert 195 <= call["output_tokens"] <= 205  # ~800 characters at 4 a token, not 3 chunks


async def test_an_error_event_in_a_passed_through_stream_fails_the_call_and_is_scrubbed(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    stream = sse(chunk("Hi"), {"error": {"message": f"overloaded, key {PROVIDER_KEY}"}})
    mock_upstream.post("/chat/completions").respond(
        content=stream, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(stream=True)

    assert PROVIDER_KEY not in response.text and "overloaded" in response.text
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["error_code"] == "upstream_error"
