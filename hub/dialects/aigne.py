"""The AIGNE Hub client protocol, as the official `@aigne/aigne-hub` SDK speaks it.

Requests (`POST /api/v2/chat`, `/api/v2/image`) are read into the OpenAI shape the stack
works in; answers are rendered back: a JSON object for a plain call, and for a stream SSE
frames `{"delta": {"text": {"text": ...}}}` for text and `{"delta": {"json": {...}}}` for
everything else, ended by closing the connection (a `data: [DONE]` would break the SDK).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hub.dialects.base import Relay
from hub.providers.base import text_of
from middleware.call import Call, CallType, Usage
from middleware.errors import error_body
from middleware.money import to_credits

# The component DID the SDK looks for in /__blocklet__.js to find the hub's mount point.
AIGNE_HUB_DID = "z8ia3xzq2tMq8CRHfaXj1BTYJyYnEcHbqP8cJ"

_ROLES = {
    "system": "system",
    "user": "user",
    "agent": "assistant",
    "assistant": "assistant",
    "tool": "tool",
}
_OPTIONS = {
    "temperature": "temperature",
    "topP": "top_p",
    "frequencyPenalty": "frequency_penalty",
    "presencePenalty": "presence_penalty",
    "parallelToolCalls": "parallel_tool_calls",
    "reasoningEffort": "reasoning_effort",
    "maxTokens": "max_tokens",
}


def _input(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("input")
    if not isinstance(value, dict):
        raise ValueError("'input' must be an object")
    return value


def _model(options: Any) -> str:
    model = options.get("model") if isinstance(options, dict) else None
    if not isinstance(model, str) or not model:
        raise ValueError("'input.modelOptions.model' is required")
    return model


def _streaming(body: dict[str, Any]) -> bool:
    options = body.get("options")
    return isinstance(options, dict) and options.get("streaming") is True


def normalize_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An AIGNE chat request as an OpenAI chat completion request."""
    given = _input(body)
    options = given.get("modelOptions") or {}
    messages = given.get("messages")
    if not isinstance(messages, list):
        raise ValueError("'input.messages' must be a list")
    request: dict[str, Any] = {
        "model": _model(options),
        "messages": [_message(m) for m in messages],
        "stream": _streaming(body),
    }
    for ours, theirs in _OPTIONS.items():
        if options.get(ours) is not None:
            request[theirs] = options[ours]
    if given.get("tools"):
        request["tools"] = given["tools"]
        choice = given.get("toolChoice")
        if choice is not None:
            request["tool_choice"] = "required" if choice == "router" else choice
    response_format = given.get("responseFormat")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = response_format.get("jsonSchema") or response_format.get("json_schema") or {}
        request["response_format"] = {"type": "json_schema", "json_schema": schema}
    return request


def _message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise ValueError("each message must be an object")
    role = _ROLES.get(str(message.get("role")))
    if role is None:
        raise ValueError(f"unknown message role {message.get('role')!r}")
    out: dict[str, Any] = {"role": role, "content": _content(message.get("content"))}
    if role == "assistant" and message.get("toolCalls"):
        out["tool_calls"] = [
            {
                "id": call.get("id", ""),
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": _as_json_text(call["function"].get("arguments")),
                },
            }
            for call in message["toolCalls"]
        ]
    if role == "tool":
        out["tool_call_id"] = message.get("toolCallId", "")
        if not isinstance(out["content"], str):
            out["content"] = _as_json_text(message.get("content"))
    if message.get("name"):
        out["name"] = message["name"]
    return out


def _content(content: Any) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, dict):
        return json.dumps(content)
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "url":
            parts.append({"type": "image_url", "image_url": {"url": str(part.get("url", ""))}})
        elif kind == "file":
            mime = part.get("mimeType") or "application/octet-stream"
            url = f"data:{mime};base64,{part.get('data', '')}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def _as_json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value if value is not None else {})


def normalize_image(body: dict[str, Any]) -> dict[str, Any]:
    """An AIGNE image request as an OpenAI image generation request."""
    given = _input(body)
    options = given.get("modelOptions") or {}
    prompt = given.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("'input.prompt' must be a string")
    request: dict[str, Any] = {"model": _model(options), "prompt": prompt}
    for name in ("n", "size", "quality", "style", "background"):
        value = given.get(name, options.get(name))
        if value is not None:
            request[name] = value
    if given.get("outputFileType") == "file":
        request["response_format"] = "b64_json"
    return request


def usage(call: Call, credits: int) -> dict[str, Any]:
    """The SDK's usage object: numbers only (it rejects strings)."""
    used = call.usage or Usage()
    return {
        "inputTokens": used.input_tokens,
        "outputTokens": used.output_tokens,
        "aigneHubCredits": float(to_credits(credits)) if credits else 0,
    }


def answer(call: Call, completion: dict[str, Any], credits: int) -> dict[str, Any]:
    """A whole OpenAI chat completion as the SDK's chat answer."""
    message = ((completion.get("choices") or [{}])[0]).get("message") or {}
    out: dict[str, Any] = {"text": text_of(message.get("content"))}
    tool_calls = [_tool_call(c) for c in message.get("tool_calls") or []]
    if tool_calls:
        out["toolCalls"] = tool_calls
    if isinstance(message.get("reasoning_content"), str):
        out["thoughts"] = message["reasoning_content"]
    parsed = _json_answer(call, out["text"])
    if parsed is not None:
        out["json"] = parsed
    out["model"] = call.model
    out["usage"] = usage(call, credits)
    return out


def image_answer(call: Call, result: dict[str, Any], credits: int) -> dict[str, Any]:
    """An OpenAI image generation answer as the SDK's image answer."""
    images = []
    for item in result.get("data") or []:
        if item.get("url"):
            images.append({"type": "url", "url": item["url"]})
        elif item.get("b64_json"):
            images.append({"type": "file", "data": item["b64_json"], "mimeType": "image/png"})
    return {"images": images, "usage": usage(call, credits), "model": call.model}


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    raw = function.get("arguments")
    try:
        arguments = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    except ValueError:
        arguments = {"_raw": raw}
    return {
        "id": call.get("id", ""),
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": arguments},
    }


def _json_answer(call: Call, text: str) -> Any:
    wants = (call.body.get("response_format") or {}).get("type") == "json_schema"
    if not wants or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def frame(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class Aigne:
    """The AIGNE client format (hub.dialects.base.ClientFormat). No provider speaks it, so
    every answer is rendered; answers show the call's credits."""

    name = "aigne"
    native_kind: str | None = None
    shows_credits = True

    def normalize(self, body: dict[str, Any], call_type: CallType) -> dict[str, Any]:
        return normalize_image(body) if call_type == "imageGeneration" else normalize_chat(body)

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes:
        # The SDK reads the OpenAI error shape for refusals.
        return error_body(status, code, message, param)

    def answer(self, call: Call, completion: bytes, credits: int) -> bytes:
        result = json.loads(completion)
        if call.call_type == "imageGeneration":
            return json.dumps(image_answer(call, result, credits)).encode()
        return json.dumps(answer(call, result, credits)).encode()

    def stream(self, call: Call) -> AigneStream:
        return AigneStream(call)

    def native_answer(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        raise NotImplementedError("no provider speaks the AIGNE format")

    def native_stream(self, call: Call, scrub: Callable[[str], str]) -> Relay:
        raise NotImplementedError("no provider speaks the AIGNE format")


class AigneStream:
    """OpenAI chunks in, the SDK's stream frames out; tool calls are sent whole at the end."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.text: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}

    def chunks(self, chunks: list[dict[str, Any]]) -> bytes:
        out = []
        for chunk in chunks:
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    self.text.append(delta["content"])
                    out.append(frame({"delta": {"text": {"text": delta["content"]}}}))
                for tool in delta.get("tool_calls") or []:
                    entry = self.tools.setdefault(
                        int(tool.get("index", 0)),
                        {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                    )
                    entry["id"] = tool.get("id") or entry["id"]
                    function = tool.get("function") or {}
                    entry["function"]["name"] += function.get("name") or ""
                    entry["function"]["arguments"] += function.get("arguments") or ""
        return b"".join(out)

    def close(self, credits: int) -> bytes:
        out = b""
        if self.tools:
            calls = [_tool_call(self.tools[i]) for i in sorted(self.tools)]
            out += frame({"delta": {"json": {"toolCalls": calls}}})
        parsed = _json_answer(self.call, "".join(self.text))
        if parsed is not None:
            out += frame({"delta": {"json": {"json": parsed}}})
        return out + frame(
            {"delta": {"json": {"model": self.call.model, "usage": usage(self.call, credits)}}}
        )

    def error(self, code: str, message: str) -> bytes:
        return frame({"message": message}, event="error")


AIGNE = Aigne()
