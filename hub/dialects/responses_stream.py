"""Normalized OpenAI chat chunks rendered as Responses API stream events, in the order the
`openai` SDKs and Codex expect: response.created, response.in_progress, then per output
item output_item.added, content_part.added, output_text.delta..., output_text.done,
content_part.done, output_item.done (function calls with function_call_arguments.delta and
.done; reasoning text as a reasoning summary), then response.completed with usage, each
numbered by `sequence_number`.
"""

from __future__ import annotations

from typing import Any

from hub.dialects.responses_render import (
    envelope,
    function_call_item,
    message_item,
    namespaces,
    reasoning_item,
    responses_usage,
    text_part,
)
from hub.sse import encode
from middleware.call import Call


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
