"""Normalized OpenAI chat answers rendered as Responses API objects and stream events.

A whole completion becomes one `response` object; a stream of chat chunks becomes the
Responses events in the order the `openai` SDKs and Codex expect (response.created,
response.in_progress, then per output item: output_item.added, content_part.added,
output_text.delta..., output_text.done, content_part.done, output_item.done; function
calls with function_call_arguments.delta/done; then response.completed with usage), each
numbered by `sequence_number`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hub.dialects.responses_request import NAMESPACE_SEPARATOR
from hub.sse import encode
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


class ResponsesStream:
    """Chat chunks of one call as Responses events (it keeps the open items' state)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # the finished items, in order
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.text = ""  # its text (or arguments) so far
        self.tool_index: int | None = None  # the chat tool call index it streams
        self.finish: str | None = None
        self.spaces = namespaces(call)

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return encode(payload, event=kind)

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        response = envelope(self.call, "in_progress", [])
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def chunks(self, chunks: list[dict[str, Any]]) -> bytes:
        out = [self._start()]
        for chunk in chunks:
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                thought = delta.get("reasoning_content")
                if isinstance(thought, str) and thought:
                    out.append(self._text("reasoning", thought))
                if isinstance(delta.get("content"), str) and delta["content"]:
                    out.append(self._text("message", delta["content"]))
                for tool in delta.get("tool_calls") or []:
                    out.append(self._tool(tool))
                if choice.get("finish_reason"):
                    self.finish = choice["finish_reason"]
        return b"".join(out)

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self.open is None or self.open["type"] != kind:
            out += self._close_item()
            out += self._open(kind)
        self.text += text
        index = len(self.output)
        item_id = self.open["id"] if self.open else ""
        if kind == "reasoning":
            return out + self._event(
                "response.reasoning_summary_text.delta",
                item_id=item_id,
                output_index=index,
                summary_index=0,
                delta=text,
            )
        return out + self._event(
            "response.output_text.delta",
            item_id=item_id,
            output_index=index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _open(self, kind: str) -> bytes:
        index = len(self.output)
        item_id = {"message": "msg", "reasoning": "rs"}[kind] + f"_{self.call.id}_{index}"
        self.text = ""
        if kind == "reasoning":
            self.open = reasoning_item(item_id, "")
            return self._event(
                "response.output_item.added", output_index=index, item=self.open
            ) + self._event(
                "response.reasoning_summary_part.added",
                item_id=item_id,
                output_index=index,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        self.open = message_item(item_id, "", "in_progress")
        return self._event(
            "response.output_item.added", output_index=index, item=self.open
        ) + self._event(
            "response.content_part.added",
            item_id=item_id,
            output_index=index,
            content_index=0,
            part=text_part(""),
        )

    def _tool(self, tool: dict[str, Any]) -> bytes:
        out = b""
        index = tool.get("index", 0)
        function = tool.get("function") or {}
        if self.open is None or self.open["type"] != "function_call" or index != self.tool_index:
            out += self._close_item()
            self.tool_index = index
            self.text = ""
            at = len(self.output)
            self.open = function_call_item(
                f"fc_{self.call.id}_{at}",
                str(tool.get("id") or f"call_{self.call.id}_{at}"),
                str(function.get("name") or ""),
                "",
                "in_progress",
                self.spaces,
            )
            out += self._event("response.output_item.added", output_index=at, item=self.open)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self.text += arguments
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=self.open["id"],
                output_index=len(self.output),
                delta=arguments,
            )
        return out

    def _close_item(self) -> bytes:
        item = self.open
        if item is None:
            return b""
        index, text, self.open = len(self.output), self.text, None
        if item["type"] == "message":
            done = message_item(item["id"], text, "completed")
            out = self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ) + self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=text_part(text),
            )
        elif item["type"] == "reasoning":
            done = reasoning_item(item["id"], text)
            out = self._event(
                "response.reasoning_summary_text.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                text=text,
            ) + self._event(
                "response.reasoning_summary_part.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                part={"type": "summary_text", "text": text},
            )
        else:
            done = {**item, "arguments": text, "status": "completed"}
            out = self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=text,
            )
        self.output.append(done)
        return out + self._event("response.output_item.done", output_index=index, item=done)

    def close(self, credits: int) -> bytes:
        out = self._start() + self._close_item()
        status = "incomplete" if self.finish == "length" else "completed"
        response = envelope(self.call, status, self.output)
        return out + self._event(f"response.{status}", response=response)

    def error(self, code: str, message: str) -> bytes:
        """An `error` event, then response.failed: SDKs and Codex stop on either."""
        out = self._start()
        out += self._event("error", code=code, message=message, param=None)
        response = envelope(self.call, "failed", self.output)
        response["error"] = {"code": code, "message": message}
        response["usage"] = responses_usage(self.call.usage)
        return out + self._event("response.failed", response=response)
