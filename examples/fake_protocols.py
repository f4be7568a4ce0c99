"""The example fake provider's Anthropic Messages and Gemini sides (see fake_provider.py).

Each answers with the fake reply, or, when the request offers tools, with a call to the
first tool (unless the last message brings a tool's result: then it answers). Token counts
are word counts, as on the OpenAI side. Anthropic requests that turn thinking on get a
thinking block first (with a signature), its words counted as output.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Send

REPLY = "Hello! I am a fake model, answering from 127.0.0.1 with predictable usage."
THOUGHT = "The user wants a greeting."
SIGNATURE = "ZmFrZS1zaWduYXR1cmU="


def answers_tool(messages: Any) -> bool:
    """Whether the last message hands back a tool's result (Anthropic's tool_result block,
    or an OpenAI `tool` message): a model then answers rather than call a tool again."""
    last = messages[-1] if isinstance(messages, list) and messages else {}
    if not isinstance(last, dict):
        return False
    content = last.get("content")
    blocks = content if isinstance(content, list) else []
    return last.get("role") == "tool" or any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks
    )


def _words(value: Any) -> int:
    """Words in every string inside a JSON value."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return sum(_words(v) for k, v in value.items() if k not in ("type", "role"))
    return 0


async def _start(send: Send, status: int, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )


async def _body(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def anthropic(payload: dict[str, Any], send: Send) -> None:
    """POST /v1/messages."""
    prompt = _words(payload.get("messages")) + _words(payload.get("system"))
    tools = [] if answers_tool(payload.get("messages")) else payload.get("tools") or []
    words = REPLY.split()
    thinking = (payload.get("thinking") or {}).get("type") == "enabled"
    thought = {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE}
    if tools:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": "toolu_fake",
            "name": tools[0]["name"],
            "input": {"city": "Paris"},
        }
        content, stop, output = [block], "tool_use", 5
    else:
        content, stop, output = [{"type": "text", "text": REPLY}], "end_turn", len(words)
    if thinking:
        content, output = [thought, *content], output + len(THOUGHT.split())
    if not payload.get("stream"):
        body = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": payload.get("model"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": output},
        }
        await _start(send, 200, b"application/json")
        await _body(send, json.dumps(body).encode(), more=False)
        return

    async def event(name: str, data: dict[str, Any]) -> None:
        await _body(send, f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())

    await _start(send, 200, b"text/event-stream")
    await event(
        "message_start",
        {
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": payload.get("model"),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": 1},
            }
        },
    )
    at = 0
    if thinking:
        await event(
            "content_block_start", {"index": 0, "content_block": {**thought, "thinking": ""}}
        )
        delta = {"type": "thinking_delta", "thinking": THOUGHT}
        await event("content_block_delta", {"index": 0, "delta": delta})
        delta = {"type": "signature_delta", "signature": SIGNATURE}
        await event("content_block_delta", {"index": 0, "delta": delta})
        await event("content_block_stop", {"index": 0})
        at = 1
    if tools:
        await event("content_block_start", {"index": at, "content_block": {**block, "input": {}}})
        for part in ('{"city":', ' "Paris"}'):
            await event(
                "content_block_delta",
                {"index": at, "delta": {"type": "input_json_delta", "partial_json": part}},
            )
    else:
        await event(
            "content_block_start", {"index": at, "content_block": {"type": "text", "text": ""}}
        )
        for i, word in enumerate(words):
            await event(
                "content_block_delta",
                {
                    "index": at,
                    "delta": {"type": "text_delta", "text": word if i == 0 else " " + word},
                },
            )
    await event("content_block_stop", {"index": at})
    await event(
        "message_delta", {"delta": {"stop_reason": stop}, "usage": {"output_tokens": output}}
    )
    await event("message_stop", {})
    await _body(send, b"", more=False)


# A 1x1 transparent PNG: what every fake image is.
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6"
    "kgAAAABJRU5ErkJggg=="
)


async def imagen(payload: dict[str, Any], send: Send) -> None:
    """POST /v1beta/models/{model}:predict: `sampleCount` images, each one pixel."""
    count = int((payload.get("parameters") or {}).get("sampleCount", 1))
    predictions = [{"bytesBase64Encoded": PIXEL, "mimeType": "image/png"}] * count
    await _start(send, 200, b"application/json")
    await _body(send, json.dumps({"predictions": predictions}).encode(), more=False)


async def gemini(path: str, payload: dict[str, Any], send: Send) -> None:
    """POST /v1beta/models/{model}:generateContent or :streamGenerateContent?alt=sse."""
    prompt = _words(payload.get("contents")) + _words(payload.get("systemInstruction"))
    declarations = [
        d for t in payload.get("tools") or [] for d in t.get("functionDeclarations", [])
    ]
    words = REPLY.split()
    if declarations:
        pieces = [[{"functionCall": {"name": declarations[0]["name"], "args": {"city": "Paris"}}}]]
        output = 5
    else:
        pieces = [[{"text": w if i == 0 else " " + w}] for i, w in enumerate(words)]
        output = len(words)
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output,
    }
    if "streamGenerateContent" not in path:
        parts = [p for piece in pieces for p in piece]
        if not declarations:
            parts = [{"text": REPLY}]
        body = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
            "usageMetadata": usage,
            "responseId": "fake-gemini",
        }
        await _start(send, 200, b"application/json")
        await _body(send, json.dumps(body).encode(), more=False)
        return
    await _start(send, 200, b"text/event-stream")
    for i, parts in enumerate(pieces):
        last = i == len(pieces) - 1
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        if last:
            candidate["finishReason"] = "STOP"
        chunk = {
            "candidates": [candidate],
            "responseId": "fake-gemini",
            "usageMetadata": usage if last else {"promptTokenCount": prompt},
        }
        await _body(send, f"data: {json.dumps(chunk)}\r\n\r\n".encode())
    await _body(send, b"", more=False)
