"""Normalized (OpenAI) answers, streams and errors written as Anthropic Messages.

A whole answer becomes one `message` object; a stream becomes Anthropic's events in their
order: message_start (with the prompt's usage as far as it is known), a ping, then per
content block content_block_start, its deltas (text_delta, thinking_delta, input_json_delta
for a tool call's arguments) and content_block_stop, then message_delta (stop reason and
the final usage) and message_stop. An error after the status line is an `error` event.
"""

from __future__ import annotations

import json
from typing import Any

from hub.sse import encode
from middleware.call import Call, Usage

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic's error type per status: the Anthropic SDKs pick their exception class by the
# status, and clients such as Claude Code read the type.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_object(status: int, code: str, message: str, param: str | None) -> dict[str, Any]:
    """Anthropic's error body; the hub's stable `code` (and `param`) ride along."""
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    error = {"type": kind, "message": message, "code": code, "param": param}
    return {"type": "error", "error": error}


def stream_error(code: str, message: str) -> bytes:
    # Mid-stream there is no status: an upstream failure is Anthropic's api_error.
    return encode(error_object(502, code, message, None), "error")


def usage_object(usage: Usage | None) -> dict[str, int]:
    """Anthropic's usage: its input_tokens leave out cache reads and writes."""
    usage = usage or Usage()
    fresh = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
    return {
        "input_tokens": max(0, fresh),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def message_id(call: Call) -> str:
    return f"msg_{call.id}"


def answer(call: Call, completion: bytes) -> bytes:
    """A normalized chat completion as an Anthropic `message`."""
    result = json.loads(completion)
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    thinking = message.get("reasoning_content")
    if isinstance(thinking, str) and thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for tool_call in message.get("tool_calls") or []:
        function = tool_call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(tool_call.get("id") or ""),
                "name": str(function.get("name", "")),
                "input": _input(function.get("arguments")),
            }
        )
    body = {
        "id": message_id(call),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": usage_object(call.usage),
    }
    return json.dumps(body).encode()


def _input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}


class MessagesRender:
    """Normalized chunks of one streamed call as Anthropic events (one per call)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.started = False
        self.block = -1  # index of the open content block, -1 when none is open
        self.block_kind = ""
        self.blocks = 0
        self.tools: dict[int, int] = {}  # OpenAI tool-call index -> content block index
        self.stop_reason = "end_turn"

    def chunks(self, chunks: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            choices = chunk.get("choices")
            if not choices:
                continue  # the usage report: call.usage has it, message_delta shows it
            out.append(self._start())
            choice = choices[0] or {}
            delta = choice.get("delta") or {}
            thinking = delta.get("reasoning_content")
            if isinstance(thinking, str) and thinking:
                out.append(self._text("thinking", thinking))
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(self._text("text", text))
            for tool_call in delta.get("tool_calls") or []:
                out.append(self._tool(tool_call))
            reason = choice.get("finish_reason")
            if reason:
                self.stop_reason = STOP_REASONS.get(str(reason), "end_turn")
        return b"".join(out)

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        # The prompt's usage is known for sure only at the end (message_delta has it); here
        # it is the count the credit check held for, so a client sizing its context has one.
        usage = self.call.usage or Usage(input_tokens=self.call.prompt_estimate or 0)
        message: dict[str, Any] = {
            "id": message_id(self.call),
            "type": "message",
            "role": "assistant",
            "model": self.call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage_object(usage), "output_tokens": 0},
        }
        return _event("message_start", {"message": message}) + _event("ping", {})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self.block = self.blocks
        self.blocks += 1
        self.block_kind = str(block["type"])
        start = {"index": self.block, "content_block": block}
        return out + _event("content_block_start", start)

    def _close_block(self) -> bytes:
        if self.block < 0:
            return b""
        index, self.block = self.block, -1
        return _event("content_block_stop", {"index": index})

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self.block_kind != kind or self.block < 0:
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            out = self._open(empty if kind == "thinking" else {"type": "text", "text": ""})
        delta = {"type": "thinking_delta", "thinking": text}
        if kind == "text":
            delta = {"type": "text_delta", "text": text}
        return out + _event("content_block_delta", {"index": self.block, "delta": delta})

    def _tool(self, tool_call: dict[str, Any]) -> bytes:
        out = b""
        index = int(tool_call.get("index") or 0)
        function = tool_call.get("function") or {}
        if index not in self.tools:
            block = {
                "type": "tool_use",
                "id": str(tool_call.get("id") or f"toolu_{self.call.id}_{index}"),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            out = self._open(block)
            self.tools[index] = self.block
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out += _event("content_block_delta", {"index": self.tools[index], "delta": delta})
        return out

    def error(self, code: str, message: str) -> bytes:
        return stream_error(code, message)

    def close(self, credits: int) -> bytes:
        out = self._start() + self._close_block()
        if self.stop_reason == "tool_use" and not self.tools:
            self.stop_reason = "end_turn"
        delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
        usage = usage_object(self.call.usage)
        out += _event("message_delta", {"delta": delta, "usage": usage})
        return out + _event("message_stop", {})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return encode({"type": name, **data}, name)
