"""What every provider adapter offers the proxy.

The hub's normalized form is the OpenAI chat format: clients speaking it pass through
untouched to OpenAI-compatible providers (the fast path), and adapters for other protocols
translate requests from it and responses and stream events into it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import httpx

from hub.providers.fields import FieldPolicy
from hub.providers.pool import Credential, CredentialPool
from middleware.call import Call, CallType, Usage


class StreamTranslator(Protocol):
    usage: Usage | None
    # Set once the provider has said the answer is over: usage reported before may be partial.
    finished: bool

    def feed(self, event: bytes) -> list[dict[str, Any]]:
        """OpenAI chunks (or an `{"error": ...}` object) for one upstream SSE event."""
        ...


class Adapter(Protocol):
    name: str
    kind: str
    models: tuple[str, ...]
    # True when the provider speaks the client's (OpenAI) protocol: bytes pass untouched.
    passthrough: bool

    def supports(self, call_type: CallType) -> bool: ...

    # The provider's keys, each with its prebuilt headers; the proxy picks and reports.
    pool: CredentialPool
    # Which request fields it carries, and what it does with the others (refuse or drop):
    # the proxy asks before anything goes upstream.
    fields: FieldPolicy

    def build_request(self, call: Call, credential: Credential) -> httpx.Request: ...

    def translate_response(self, body: bytes, call: Call) -> tuple[bytes, Usage | None]:
        """A whole upstream answer as an OpenAI response body, and its usage (None when
        the provider reports none: the proxy then estimates it)."""
        ...

    def stream_translator(self, call: Call) -> StreamTranslator: ...

    def refuses_key(self, status: int, body: bytes) -> bool:
        """Whether an error answer (a 4xx) says the hub's key is refused (invalid, out of
        credit, not allowed), read from the status and the provider's error type or code,
        never from its message: that may echo the caller's own text."""
        ...


def upstream_headers(host: bytes, *extra: tuple[bytes, bytes]) -> httpx.Headers:
    """The headers of a JSON request to a provider, built once per key by each adapter."""
    return httpx.Headers(
        [
            (b"host", host),
            (b"content-type", b"application/json"),
            # Plain bytes: the proxy reads usage out of answers and streams as they pass.
            (b"accept-encoding", b"identity"),
            # Given here, so aiohttp has no default headers to add (its slow path).
            (b"user-agent", b"aigne-hub-python"),
            *extra,
        ]
    )


def json_request(
    url: httpx.URL, headers: httpx.Headers, body: Any, timeout: dict[str, float]
) -> httpx.Request:
    """A POST of a JSON body, built without httpx's body encoding layers."""
    content = json.dumps(body, separators=(",", ":")).encode()
    return bytes_request(url, headers, content, timeout)


def bytes_request(
    url: httpx.URL, headers: httpx.Headers, content: bytes, timeout: dict[str, float]
) -> httpx.Request:
    """A POST of ready JSON bytes."""
    request = httpx.Request(
        "POST",
        url,
        headers=headers,
        stream=httpx.ByteStream(content),
        extensions={"timeout": timeout},
    )
    request.headers["content-length"] = str(len(content))
    return request


def completion(
    call: Call, message: dict[str, Any], finish_reason: str | None, usage: Usage, id_: str
) -> dict[str, Any]:
    """An OpenAI chat completion object."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": openai_usage(usage),
    }


def chunk(call: Call, id_: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """An OpenAI chat completion chunk with one choice."""
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": call.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(call: Call, id_: str, usage: Usage) -> dict[str, Any]:
    """The last chunk of an OpenAI stream that asked for usage: no choices, the usage."""
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": call.model,
        "choices": [],
        "usage": openai_usage(usage),
    }


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def text_of(content: Any) -> str:
    """The text of an OpenAI message content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


def max_output_tokens(body: dict[str, Any], default: int) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )


def stop_list(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    return None


def tool_arguments(raw: Any) -> Any:
    """OpenAI tool-call arguments (a JSON string) as an object."""
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {"_raw": raw}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def count(table: Any, key: str) -> int:
    """A token count from a provider's usage object: a non-negative int, else 0."""
    value = table.get(key) if isinstance(table, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class Turns:
    """A conversation for providers that want user and model turns to alternate: items for
    the same role as the last turn join it rather than start another."""

    def __init__(self, items_key: str) -> None:
        self.items_key = items_key
        self.turns: list[dict[str, Any]] = []

    def add(self, role: str, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        if self.turns and self.turns[-1]["role"] == role:
            self.turns[-1][self.items_key].extend(items)
        else:
            self.turns.append({"role": role, self.items_key: list(items)})


def assistant_message(text: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAI assistant message for an answer's text and tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def error_fields(body: bytes) -> dict[str, Any]:
    """The `error` object of a provider's error answer; empty if it has none."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def error_item(error: Any, type_key: str) -> dict[str, Any]:
    """An upstream error event as the `{"error": ...}` item a stream translator yields."""
    error = error if isinstance(error, dict) else {}
    return {
        "error": {
            "message": str(error.get("message", "upstream error")),
            "type": str(error.get(type_key, "upstream_error")),
            "code": "upstream_error",
        }
    }
