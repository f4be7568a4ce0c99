"""An OpenAI-compatible provider answered in-process: always a success, usage by body size.

The fuzz test blames every 5xx on the hub, so this provider never fails whatever it is
sent; its token counts grow with the request so that charges vary with the input.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

COMPLETION_TOKENS = 5


def provider() -> httpx.MockTransport:
    return httpx.MockTransport(_answer)


async def _answer(request: httpx.Request) -> httpx.Response:
    if any(byte in value for _, value in request.headers.raw for byte in b"\r\n\x00"):
        # What the hub's real transport (aiohttp) raises before sending such a header;
        # MockTransport itself would send it.
        raise ValueError("Newline or carriage return character detected in HTTP header")
    raw = await request.aread()
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    model = body.get("model")
    if not isinstance(model, str):
        model = "model"
    usage = {
        "prompt_tokens": 1 + len(raw) // 4,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": 1 + len(raw) // 4 + COMPLETION_TOKENS,
    }
    path = request.url.path
    if path.endswith("/chat/completions"):
        if body.get("stream") is True:
            return _stream(model, usage)
        return httpx.Response(200, json=_completion(model, usage))
    if path.endswith("/embeddings"):
        data = [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}]
        return httpx.Response(200, json={"object": "list", "data": data, "usage": usage})
    if path.endswith("/images/generations"):
        image = {"b64_json": "aW1hZ2U=", "revised_prompt": "an image"}
        return httpx.Response(200, json={"created": 1, "data": [image], "usage": usage})
    if path.endswith("/models"):
        return httpx.Response(200, json={"object": "list", "data": [{"id": "gpt-4o-mini"}]})
    return httpx.Response(404, json={"error": {"message": "no such path", "type": "not_found"}})


def _completion(model: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fuzz",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there."},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def _stream(model: str, usage: dict[str, int]) -> httpx.Response:
    def chunk(delta: dict[str, Any], finish: str | None, with_usage: bool = False) -> bytes:
        event: dict[str, Any] = {
            "id": "chatcmpl-fuzz",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if with_usage:
            event["choices"] = []
            event["usage"] = usage
        return b"data: " + json.dumps(event).encode() + b"\n\n"

    body = (
        chunk({"role": "assistant", "content": "Hello"}, None)
        + chunk({"content": " there."}, "stop")
        + chunk({}, None, with_usage=True)
        + b"data: [DONE]\n\n"
    )
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
