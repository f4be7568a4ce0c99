"""Normalized OpenAI chat answers rendered as Responses API objects: a whole completion
becomes one `response` object; the output items and usage are shared with the stream
renderer (responses_stream)."""

from __future__ import annotations

import json
import time
from typing import Any

from hub.dialects.responses_request import NAMESPACE_SEPARATOR
from middleware.call import Call, Usage


def response_id(call: Call) -> str:
    return f"resp_{call.id}"


def responses_usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def envelope(call: Call, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    """The `response` object around `output`, echoing what the request asked for."""
    asked = call.body
    return {
        "id": response_id(call),
        "object": "response",
        "created_at": int(call.started_at) if call.started_at else int(time.time()),
        "status": status,
        "model": call.model,
        "output": output,
        "error": None,
        "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete" else None),
        "instructions": None,
        "max_output_tokens": asked.get("max_tokens"),
        "parallel_tool_calls": asked.get("parallel_tool_calls", True),
        "temperature": asked.get("temperature"),
        "top_p": asked.get("top_p"),
        "tool_choice": "auto",
        "tools": [],
        "metadata": asked.get("metadata") or {},
        "usage": responses_usage(call.usage) if status != "in_progress" else None,
    }


def namespaces(call: Call) -> set[str]:
    """The namespaces of the request's namespace tools, to split flattened names back."""
    if b'"namespace"' not in call.raw_body:
        return set()
    tools = json.loads(call.raw_body).get("tools") or []
    return {
        str(t.get("name")) for t in tools if isinstance(t, dict) and t.get("type") == "namespace"
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str, spaces: set[str]
) -> dict[str, Any]:
    item = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    space, sep, short = name.partition(NAMESPACE_SEPARATOR)
    if sep and space in spaces:
        item["namespace"], item["name"] = space, short
    return item


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [text_part(text)] if status != "in_progress" else [],
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": summary}


def answer(call: Call, completion: bytes) -> bytes:
    """A normalized chat completion body as a Responses `response` object."""
    body = json.loads(completion)
    choice = body["choices"][0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    spaces = namespaces(call)
    thought = message.get("reasoning_content")
    if isinstance(thought, str) and thought:
        output.append(reasoning_item(f"rs_{call.id}", thought))
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(message_item(f"msg_{call.id}", text, "completed"))
    for i, tool in enumerate(message.get("tool_calls") or []):
        function = tool.get("function") or {}
        output.append(
            function_call_item(
                f"fc_{call.id}_{i}",
                str(tool.get("id")),
                str(function.get("name")),
                str(function.get("arguments") or ""),
                "completed",
                spaces,
            )
        )
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    return json.dumps(envelope(call, status, output)).encode()
