"""The example fake provider's Responses API side: POST /v1/responses (see fake_provider.py).

It answers with the fake reply, or, when the request offers function tools and its last
input item is not a tool's output, with a call to the first function tool. Token counts
are word counts, as on the other sides: the input's words (instructions included), and
the reply's words (5 for a tool call).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Send

REPLY = "Hello! I am a fake model, answering from 127.0.0.1 with predictable usage."
TOOL_ARGUMENTS = '{"city": "Paris"}'
TOOL_OUTPUT_TOKENS = 5


def words(value: Any) -> int:
    """Words in every string inside a JSON value, but for item types, roles and ids."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(v) for v in value)
    if isinstance(value, dict):
        skip = ("type", "role", "id", "call_id", "status")
        return sum(words(v) for k, v in value.items() if k not in skip)
    return 0


def input_tokens(payload: dict[str, Any]) -> int:
    return words(payload.get("input")) + words(payload.get("instructions"))


def _tool(payload: dict[str, Any]) -> str | None:
    """The function tool the fake calls, if it calls one."""
    given = payload.get("input")
    if isinstance(given, list) and given and isinstance(given[-1], dict):
        if given[-1].get("type") == "function_call_output":
            return None
    for tool in payload.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            return str(tool["name"])
    return None


async def responses(payload: dict[str, Any], send: Send) -> None:
    """POST /v1/responses, streaming or not."""
    model = payload.get("model")
    tool = _tool(payload)
    prompt = input_tokens(payload)
    pieces = REPLY.split()
    output = TOOL_OUTPUT_TOKENS if tool else len(pieces)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }
    if tool:
        item: dict[str, Any] = {
            "id": "fc_fake",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_fake",
            "name": tool,
            "arguments": TOOL_ARGUMENTS,
        }
    else:
        item = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": REPLY, "annotations": []}],
        }
    response = {
        "id": "resp_fake",
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "model": model,
        "output": [item],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }
    if not payload.get("stream"):
        body = json.dumps(response).encode()
        await send(_start(b"application/json"))
        await send({"type": "http.response.body", "body": body})
        return
    await send(_start(b"text/event-stream"))
    events = _Events(send)
    begun = {**response, "status": "in_progress", "output": [], "usage": None}
    await events.send("response.created", response=begun)
    await events.send("response.in_progress", response=begun)
    if tool:
        await events.send(
            "response.output_item.added", output_index=0, item={**item, "arguments": ""}
        )
        for part in ('{"city":', ' "Paris"}'):
            await events.send(
                "response.function_call_arguments.delta",
                item_id="fc_fake",
                output_index=0,
                delta=part,
            )
        await events.send(
            "response.function_call_arguments.done",
            item_id="fc_fake",
            output_index=0,
            arguments=TOOL_ARGUMENTS,
        )
    else:
        at = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": []}
        await events.send(
            "response.output_item.added", output_index=0, item={**item, "content": []}
        )
        await events.send("response.content_part.added", **at, part=part)
        for i, word in enumerate(pieces):
            await events.send(
                "response.output_text.delta", **at, delta=word if i == 0 else " " + word
            )
        await events.send("response.output_text.done", **at, text=REPLY)
        await events.send("response.content_part.done", **at, part={**part, "text": REPLY})
    await events.send("response.output_item.done", output_index=0, item=item)
    await events.send("response.completed", response=response)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Events:
    def __init__(self, send: Send) -> None:
        self.send_ = send
        self.sequence = 0

    async def send(self, kind: str, **fields: Any) -> None:
        data = json.dumps({"type": kind, "sequence_number": self.sequence, **fields})
        self.sequence += 1
        chunk = f"event: {kind}\ndata: {data}\n\n".encode()
        await self.send_({"type": "http.response.body", "body": chunk, "more_body": True})


def _start(content_type: bytes) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", content_type)],
    }
