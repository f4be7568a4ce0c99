"""Anthropic Messages: OpenAI chat requests in, Anthropic answers and events out as OpenAI."""

from __future__ import annotations

import json
from typing import Any

import httpx

from hub.providers.anthropic_fields import ANSWER_TOOL, FIELDS, answer_schema
from hub.providers.anthropic_native import native_request
from hub.providers.base import (
    Turns,
    assistant_message,
    chunk,
    completion,
    count,
    error_fields,
    error_item,
    json_request,
    max_output_tokens,
    text_of,
    tool_arguments,
    upstream_headers,
)
from hub.providers.fields import FieldPolicy, apply_fields, data_url
from hub.providers.pool import Credential, CredentialPool
from hub.settings import ProviderSettings
from hub.sse import event_data
from middleware.call import Call, CallType, Usage

API_VERSION = "2023-06-01"
# Anthropic requires max_tokens; OpenAI clients often leave it out.
DEFAULT_MAX_TOKENS = 4096
# Anthropic's error types about the key rather than the request: not authenticated, not
# permitted, or the account's billing refused.
KEY_REFUSALS = frozenset({"authentication_error", "permission_error", "billing_error"})
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


class AnthropicProvider:
    kind = "anthropic"
    passthrough = False

    def __init__(self, settings: ProviderSettings, timeout: dict[str, float]) -> None:
        self.name = settings.name
        self.models = settings.models
        self.timeout = timeout
        base = settings.base_url.rstrip("/")
        # Accept both "https://api.anthropic.com" and ".../v1" as the base URL.
        self.url = httpx.URL(base + ("/messages" if base.endswith("/v1") else "/v1/messages"))
        self.pool = CredentialPool(
            settings.api_keys, settings.key_weights(), self._headers, provider=self.name
        )
        self.fields = FieldPolicy(self.name, self.kind, FIELDS, settings.drop_unsupported)

    def _headers(self, key: str | None) -> httpx.Headers:
        auth = [(b"x-api-key", key.encode())] if key is not None else []
        return upstream_headers(
            self.url.netloc, (b"anthropic-version", API_VERSION.encode()), *auth
        )

    def supports(self, call_type: CallType) -> bool:
        return call_type == "chatCompletion"

    def build_request(self, call: Call, credential: Credential) -> httpx.Request:
        if call.dialect == "anthropic":
            # The client speaks Messages itself: its own body goes, so nothing is lost.
            return native_request(self.url, credential.headers, call, self.timeout)
        return json_request(self.url, credential.headers, to_anthropic(call), self.timeout)

    def translate_response(self, body: bytes, call: Call) -> tuple[bytes, Usage]:
        answer = json.loads(body)
        if not isinstance(answer, dict):
            raise ValueError("not an Anthropic message")
        usage = usage_of(answer.get("usage"))
        json_answer = answer_schema(call.body) is not None
        text: list[str] = []
        thinking: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for block in answer.get("content") or []:
            if block.get("type") == "text":
                text.append(str(block.get("text", "")))
            elif block.get("type") == "thinking":
                thinking.append(str(block.get("thinking", "")))
            elif json_answer and block.get("name") == ANSWER_TOOL:
                # Structured output asked through the forced tool: its input is the answer.
                text.append(json.dumps(block.get("input") or {}))
            elif block.get("type") == "tool_use":
                tool_calls.append(_tool_call(block, len(tool_calls))["function_call"])
        message = assistant_message("".join(text), tool_calls)
        if thinking:
            message["reasoning_content"] = "".join(thinking)
        finish = _finish(answer.get("stop_reason"), bool(tool_calls))
        result = completion(call, message, finish, usage, str(answer.get("id", "msg")))
        return json.dumps(result).encode(), usage

    def stream_translator(self, call: Call) -> AnthropicStream:
        return AnthropicStream(call)

    def refuses_key(self, status: int, body: bytes) -> bool:
        return status in (401, 402) or error_fields(body).get("type") in KEY_REFUSALS


def to_anthropic(call: Call) -> dict[str, Any]:
    """The Messages request for an OpenAI chat request."""
    body = call.body
    system: list[dict[str, Any]] = []
    turns = Turns("content")  # Anthropic wants user and assistant turns to alternate
    add = turns.add

    for message in body.get("messages", []):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_cached(message, _text_blocks(content)))
        elif role == "user":
            add("user", _cached(message, _user_blocks(content)))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if text_of(content):
                blocks.append({"type": "text", "text": text_of(content)})
            for tool_call in message.get("tool_calls") or []:
                function = tool_call.get("function", {})
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tool_call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": tool_arguments(function.get("arguments")),
                    }
                )
            add("assistant", blocks)
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.get("tool_call_id", ""),
                        "content": text_of(content),
                    }
                ],
            )
    request: dict[str, Any] = {
        "model": call.upstream_model,
        "messages": turns.turns,
        "max_tokens": max_output_tokens(body, DEFAULT_MAX_TOKENS),
    }
    if any("cache_control" in block for block in system):
        request["system"] = [block for block in system if block["text"]]  # kept as blocks
    elif system:
        request["system"] = "\n\n".join(b["text"] for b in system if b["text"])
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
    if tools:
        request["tools"] = [
            {
                "name": t["function"].get("name", ""),
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
                **_cache_mark(t),
            }
            for t in tools
        ]
        choice = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            request["tool_choice"] = choice
    # The other fields, as the table says (see anthropic_fields.py).
    apply_fields(request, body, FIELDS)
    if call.stream:
        request["stream"] = True
    return request


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": str(part.get("text", "")), **_cache_mark(part)})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            blocks.append({"type": "image", "source": _image_source(url), **_cache_mark(part)})
        elif part.get("type") == "file" and (found := data_url(part.get("file"), "file_data")):
            media_type, data = found
            source = {"type": "base64", "media_type": media_type, "data": data}
            blocks.append({"type": "document", "source": source, **_cache_mark(part)})
    return blocks


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    """System text as blocks, each keeping its cache mark."""
    return [b for b in _user_blocks(content) if b["type"] == "text"]


# Prompt caching, as OpenAI-format clients ask Anthropic for it (LiteLLM's convention): a
# `cache_control` on a content part, a tool, or a whole message (its last block) goes
# through; Anthropic then reports cache writes and reads, which rates may price apart.
def _cache_mark(item: dict[str, Any]) -> dict[str, Any]:
    mark = item.get("cache_control")
    return {"cache_control": mark} if isinstance(mark, dict) else {}


def _cached(message: dict[str, Any], blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mark = _cache_mark(message)
    if mark and blocks:
        blocks[-1] = {**blocks[-1], **mark}
    return blocks


def _image_source(url: str) -> dict[str, str]:
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    return None


def _finish(reason: Any, called: bool) -> str:
    # A tool_use stop with no tool call left is the structured answer's forced tool.
    finish = FINISH.get(str(reason), "stop")
    return "stop" if finish == "tool_calls" and not called else finish


def _tool_call(block: dict[str, Any], index: int) -> dict[str, Any]:
    arguments = json.dumps(block.get("input") or {})
    return {
        "function_call": {
            "id": block.get("id", ""),
            "type": "function",
            "function": {"name": block.get("name", ""), "arguments": arguments},
        },
        "index": index,
    }


def usage_of(raw: Any) -> Usage:
    """OpenAI-style usage from Anthropic's: the prompt counts cache reads and writes too."""
    cached = count(raw, "cache_read_input_tokens")
    written = count(raw, "cache_creation_input_tokens")
    prompt = count(raw, "input_tokens") + cached + written
    return Usage(prompt, count(raw, "output_tokens"), cached, cache_write_tokens=written)


class AnthropicStream:
    """Messages streaming events to OpenAI chunks.

    message_start carries the prompt usage; content blocks become content or tool-call
    deltas; message_delta carries the stop reason and the output usage.
    """

    def __init__(self, call: Call) -> None:
        self.call = call
        self.usage: Usage | None = None
        self.finished = False
        self.id = "msg"
        self._tool_index: dict[int, int] = {}
        self._json_answer = answer_schema(call.body) is not None
        self._answer_block = -1  # the content block of the structured answer's tool

    def feed(self, event: bytes) -> list[dict[str, Any]]:
        data = event_data(event)
        if not data:
            return []
        try:
            payload = json.loads(data)
        except ValueError:
            return []
        kind = payload.get("type")
        call = self.call
        if kind == "message_start":
            message = payload.get("message") or {}
            self.id = str(message.get("id", self.id))
            self.usage = usage_of(message.get("usage"))
            return [chunk(call, self.id, {"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("name") == ANSWER_TOOL and self._json_answer:
                self._answer_block = int(payload.get("index", 0))
                return []
            if block.get("type") == "tool_use":
                index = len(self._tool_index)
                self._tool_index[int(payload.get("index", 0))] = index
                start = _tool_call(block, index)["function_call"]
                start["function"]["arguments"] = ""
                return [chunk(call, self.id, {"tool_calls": [{"index": index, **start}]})]
            if block.get("type") == "text" and block.get("text"):
                return [chunk(call, self.id, {"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [chunk(call, self.id, {"content": str(delta.get("text", ""))})]
            if delta.get("type") == "thinking_delta":
                thought = {"reasoning_content": str(delta.get("thinking", ""))}
                return [chunk(call, self.id, thought)]
            if delta.get("type") == "input_json_delta" and (
                int(payload.get("index", 0)) == self._answer_block
            ):
                return [chunk(call, self.id, {"content": str(delta.get("partial_json", ""))})]
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(int(payload.get("index", 0)), 0)
                arguments = {"arguments": str(delta.get("partial_json", ""))}
                return [
                    chunk(call, self.id, {"tool_calls": [{"index": index, "function": arguments}]})
                ]
            return []
        if kind == "message_delta":
            self.finished = True
            out = usage_of(payload.get("usage")).output_tokens
            base = self.usage or Usage()
            self.usage = Usage(
                base.input_tokens,
                out,
                base.cached_tokens,
                cache_write_tokens=base.cache_write_tokens,
            )
            stop_reason = (payload.get("delta") or {}).get("stop_reason")
            reason = _finish(stop_reason, bool(self._tool_index))
            return [chunk(call, self.id, {}, reason)]
        if kind == "error":
            return [error_item(payload.get("error"), "type")]
        return []  # ping, content_block_stop, message_stop
