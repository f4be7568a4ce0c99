"""Normalized (OpenAI) answers and stream chunks rendered as Gemini GenerateContentResponse
objects, and the hub's errors in Google's error shape."""

from __future__ import annotations

import json
from typing import Any

from middleware.call import Call, Usage

# OpenAI finish reasons as Gemini's (a tool call ends with STOP on Gemini too).
_FINISH = {
    "stop": "STOP",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
}
# HTTP status -> google.rpc status name, the `status` google-genai reads off an error.
# 402 (out of credits) has no Google twin: FAILED_PRECONDITION says "not in a state to
# serve this" without inviting the retry that RESOURCE_EXHAUSTED (a 429) would.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def dumps(value: Any) -> bytes:
    # Compact: google-genai spots a streamed error by the chunk starting `{"error":`.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def error_object(status: int, code: str, message: str, param: str | None) -> dict[str, Any]:
    """Google's error: the HTTP status as `code`, the rpc status name, and the hub's own
    stable code both in the message and as the ErrorInfo reason."""
    info: dict[str, Any] = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": code,
        "domain": "aigne-hub",
    }
    if param:
        info["metadata"] = {"param": param}
    return {
        "error": {
            "code": status,
            "message": f"{message} ({code})",
            "status": _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
            "details": [info],
        }
    }


def error_body(status: int, code: str, message: str, param: str | None) -> bytes:
    return dumps(error_object(status, code, message, param))


def usage_metadata(usage: Usage | None) -> dict[str, Any]:
    used = usage or Usage()
    out = {
        "promptTokenCount": used.input_tokens,
        "candidatesTokenCount": used.output_tokens,
        "totalTokenCount": used.input_tokens + used.output_tokens,
    }
    if used.cached_tokens:
        out["cachedContentTokenCount"] = used.cached_tokens
    return out


def function_part(tool_call: dict[str, Any]) -> dict[str, Any]:
    function = tool_call.get("function") or {}
    raw = function.get("arguments")
    try:
        args = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
    except ValueError:
        args = {"_raw": raw}  # a provider's broken arguments, shown rather than lost
    part: dict[str, Any] = {"name": str(function.get("name", "")), "args": args}
    if tool_call.get("id"):
        part["id"] = str(tool_call["id"])
    return {"functionCall": part}


def _candidate(index: int, message: dict[str, Any], finish: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if isinstance(message.get("reasoning_content"), str) and message["reasoning_content"]:
        parts.append({"text": message["reasoning_content"], "thought": True})
    content = message.get("content")
    text = (
        content
        if isinstance(content, str)
        else "".join(str(p.get("text", "")) for p in content or [] if isinstance(p, dict))
    )
    if text:
        parts.append({"text": text})
    parts.extend(function_part(c) for c in message.get("tool_calls") or [])
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        candidate["finishReason"] = _FINISH.get(str(finish), "OTHER")
    return candidate


def answer(call: Call, completion: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as a GenerateContentResponse."""
    candidates = [
        _candidate(int(c.get("index", i)), c.get("message") or {}, c.get("finish_reason") or "stop")
        for i, c in enumerate(completion.get("choices") or [])
    ]
    return {
        "candidates": candidates,
        "usageMetadata": usage_metadata(call.usage),
        "modelVersion": call.model,
        "responseId": str(completion.get("id") or call.id),
    }


class GeminiRender:
    """OpenAI chunks in, `data: <GenerateContentResponse>` events out. Text goes as it
    comes; a tool call's arguments arrive in pieces, so function calls go whole in the
    last event, with the finish reason and usageMetadata."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.id = call.id
        self.tools: dict[tuple[int, int], dict[str, Any]] = {}
        self.finish: dict[int, str] = {}

    def _event(self, candidates: list[dict[str, Any]], last: bool = False) -> bytes:
        payload: dict[str, Any] = {"candidates": candidates}
        if last:
            payload["usageMetadata"] = usage_metadata(self.call.usage)
        payload["modelVersion"] = self.call.model
        payload["responseId"] = self.id
        return b"data: " + dumps(payload) + b"\r\n\r\n"

    def chunks(self, chunks: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            if chunk.get("id"):
                self.id = str(chunk["id"])
            for choice in chunk.get("choices") or []:
                index = int(choice.get("index", 0))
                delta = choice.get("delta") or {}
                parts: list[dict[str, Any]] = []
                if isinstance(delta.get("reasoning_content"), str) and delta["reasoning_content"]:
                    parts.append({"text": delta["reasoning_content"], "thought": True})
                if isinstance(delta.get("content"), str) and delta["content"]:
                    parts.append({"text": delta["content"]})
                for tool in delta.get("tool_calls") or []:
                    self._tool(index, tool)
                if choice.get("finish_reason"):
                    self.finish[index] = str(choice["finish_reason"])
                if parts:
                    content = {"role": "model", "parts": parts}
                    out.append(self._event([{"content": content, "index": index}]))
        return b"".join(out)

    def _tool(self, index: int, tool: dict[str, Any]) -> None:
        entry = self.tools.setdefault(
            (index, int(tool.get("index", 0))),
            {"id": "", "function": {"name": "", "arguments": ""}},
        )
        entry["id"] = tool.get("id") or entry["id"]
        function = tool.get("function") or {}
        entry["function"]["name"] += function.get("name") or ""
        entry["function"]["arguments"] += function.get("arguments") or ""

    def error(self, code: str, message: str) -> bytes:
        return stream_error(code, message)

    def close(self, credits: int) -> bytes:
        indexes = sorted({i for i, _ in self.tools} | set(self.finish) | {0})
        candidates = []
        for index in indexes:
            calls = [self.tools[k] for k in sorted(self.tools) if k[0] == index]
            parts = [function_part(c) for c in calls] or [{"text": ""}]
            reason = _FINISH.get(self.finish.get(index, "stop"), "OTHER")
            candidates.append(
                {
                    "content": {"role": "model", "parts": parts},
                    "finishReason": reason,
                    "index": index,
                }
            )
        return self._event(candidates, last=True)


def stream_error(code: str, message: str) -> bytes:
    """An error after the status line: google-genai raises on a chunk `{"error": ...}`,
    as an APIError of the class its `code` says (502: ServerError)."""
    return b"data: " + dumps(error_object(502, code, message, None)) + b"\r\n\r\n"
