"""The OpenAI chat completions client format (and the embeddings and images routes).

Its requests are the hub's normalized shape already, and OpenAI-compatible providers
speak it natively: their answers and streams pass through byte for byte, tapped for
usage. Answers translated from other providers are normalized OpenAI bodies already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hub.dialects.base import Relay, StreamRender
from hub.providers.base import usage_chunk
from hub.providers.openai import usage_from, usage_in_body
from hub.sse import encode, json_data
from middleware.call import Call, CallType, Usage
from middleware.errors import error_body


class OpenAIChat:
    name = "openai"
    native_kind: str | None = "openai"
    shows_credits = False

    def normalize(self, body: dict[str, Any], call_type: CallType) -> dict[str, Any]:
        return body

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes:
        return error_body(status, code, message, param)

    def answer(self, call: Call, completion: bytes, credits: int) -> bytes:
        return completion

    def stream(self, call: Call) -> StreamRender:
        return OpenAIRender(call)

    def native_answer(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        return body, usage_in_body(body, call.call_type)

    def native_stream(self, call: Call, scrub: Callable[[str], str]) -> Relay:
        return PassThrough(call, scrub)


OPENAI_CHAT = OpenAIChat()


class OpenAIRender:
    """Normalized chunks are OpenAI chunks: encoded as they are."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.wants_usage = wants_usage(call)

    def chunks(self, chunks: list[dict[str, Any]]) -> bytes:
        return b"".join(encode(c) for c in chunks if c.get("choices") or self.wants_usage)

    def error(self, code: str, message: str) -> bytes:
        return stream_error(code, message)

    def close(self, credits: int) -> bytes:
        out = b""
        if self.wants_usage and self.call.usage is not None:
            out = encode(usage_chunk(self.call, f"chatcmpl-{self.call.id}", self.call.usage))
        return out + b"data: [DONE]\n\n"


class PassThrough:
    """OpenAI on both sides: events go through as they are, tapped for usage."""

    def __init__(self, call: Call, scrub: Callable[[str], str]) -> None:
        self.call = call
        self.scrub = scrub
        self.wants_usage = wants_usage(call)
        self.done = False

    @property
    def complete(self) -> bool:
        return self.done

    def relay(self, events: list[bytes]) -> bytes:
        if events and b"[DONE]" in events[-1]:
            self.done = True
        return tap(events, self.call, self.wants_usage, self.scrub)

    def flush(self, tail: bytes) -> bytes:
        # An event the provider left unterminated is still read for usage, and closed.
        return self.relay([tail + b"\n\n"]) if tail.strip() else b""

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        return stream_error(*error) if error else b""  # the provider sent its own [DONE]


def stream_error(code: str, message: str) -> bytes:
    # The status line is gone; an `error` chunk is what OpenAI SDKs raise on.
    return encode({"error": {"message": message, "type": "upstream_error", "code": code}})


def wants_usage(call: Call) -> bool:
    options = call.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def tap(
    events: Iterable[bytes], call: Call, wants_usage: bool, scrub: Callable[[str], str]
) -> bytes:
    """Pass events through, noting usage; drop the usage-only chunk if it was not asked for;
    an error event fails the call, its message scrubbed of provider keys."""
    kept: list[bytes] = []
    for event in events:
        if b'"error"' in event:
            payload = json_data(event)
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                message = scrub(str(payload["error"].get("message", "upstream error")))
                call.fail("upstream_error", message)
                kept.append(stream_error("upstream_error", message))
                continue
        if b'"delta"' in event:
            call.delivered_chunks += 1
            call.delivered_bytes += len(event)
            if not call.smallest_chunk or len(event) < call.smallest_chunk:
                call.smallest_chunk = len(event)
        if b'"usage"' in event and b'"usage":null' not in event and b'"usage": null' not in event:
            payload = json_data(event)
            usage = usage_from(payload, call.call_type)
            if usage is not None:
                call.usage = usage
                if not wants_usage and isinstance(payload, dict) and not payload.get("choices"):
                    continue
        kept.append(event)
    return b"".join(kept)
