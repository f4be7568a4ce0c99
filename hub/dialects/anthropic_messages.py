"""The Anthropic Messages client format (`POST /v1/messages`), as the `anthropic` SDKs and
Claude Code speak it.

To an Anthropic provider the client's own body goes upstream (only the model renamed) and
the answer comes back byte for byte, its usage read from `message_start` and
`message_delta` as it passes. To any other provider the request is read into the
normalized OpenAI request (anthropic_messages_request) and the answer rendered back
(anthropic_messages_render); what cannot be translated is refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hub.dialects import anthropic_messages_render as render
from hub.dialects.anthropic_messages_request import normalize, untranslatable
from hub.providers.anthropic import usage_of
from hub.providers.anthropic_native import PASSED_HEADERS
from hub.sse import encode, json_data
from middleware.call import Call, CallType, Usage
from middleware.errors import HubError


class AnthropicMessages:
    name = "anthropic"
    native_kind = "anthropic"
    shows_credits = False
    # Read by the Call layer, sent on by the pass-through (hub.providers.anthropic_native).
    passed_headers = PASSED_HEADERS

    def normalize(self, body: dict[str, Any], call_type: CallType) -> dict[str, Any]:
        if call_type != "chatCompletion":
            raise ValueError("the Messages format serves chat calls only")
        return normalize(body)

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes:
        return json.dumps(render.error_object(status, code, message, param)).encode()

    def answer(self, call: Call, completion: bytes, credits: int) -> bytes:
        return render.answer(call, completion)

    def stream(self, call: Call) -> render.MessagesRender:
        return render.MessagesRender(call)

    def native_answer(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        answer = json.loads(body)
        usage = answer.get("usage") if isinstance(answer, dict) else None
        return body, usage_of(usage) if isinstance(usage, dict) else None

    def native_stream(self, call: Call, scrub: Callable[[str], str]) -> MessagesTap:
        return MessagesTap(call, scrub)

    def refusal(self, call: Call, kind: str) -> HubError | None:
        """Why this call cannot go to a provider of `kind`; None if it can. For a
        translated call the raw body is read again, strictly (only then: the pass-through
        needs no second reading)."""
        if kind == self.native_kind:
            betas = call.passed_headers.get("anthropic-beta", "")
            if "context-1m" in betas:
                # Prompts past 200K tokens are billed at twice the rate the hub keeps.
                return HubError(
                    400,
                    "unsupported_parameter",
                    "'anthropic-beta: context-1m' is billed above the model's rate.",
                    "anthropic-beta",
                )
            return None
        body = json.loads(call.raw_body)
        found = untranslatable(body)
        if found is None and kind == "openai" and body.get("top_k") is not None:
            # OpenAI's API refuses the field (the Gemini adapter carries it as topK).
            return HubError(
                400,
                "unsupported_parameter",
                "'top_k' is not taken by OpenAI-compatible providers.",
                "top_k",
            )
        return found


ANTHROPIC_MESSAGES = AnthropicMessages()


class MessagesTap:
    """Anthropic on both sides: events go out as they came; usage is read from
    message_start (the prompt) and message_delta (the output, and in newer API versions
    the whole usage); an upstream error event fails the call, its message scrubbed."""

    def __init__(self, call: Call, scrub: Callable[[str], str]) -> None:
        self.call = call
        self.scrub = scrub
        self.done = False

    @property
    def complete(self) -> bool:
        return self.done

    def relay(self, events: list[bytes]) -> bytes:
        return b"".join(self._one(event) for event in events)

    def _one(self, event: bytes) -> bytes:
        call = self.call
        # The event name leads each event: content deltas, by far the most, are only counted.
        if event.startswith(b"event: content_block_delta"):
            call.delivered_chunks += 1
            call.delivered_bytes += len(event)
            if not call.smallest_chunk or len(event) < call.smallest_chunk:
                call.smallest_chunk = len(event)
            return event
        if not (b"message_start" in event or b"message_delta" in event or b"error" in event):
            return event
        payload = json_data(event)
        payload = payload if isinstance(payload, dict) else {}
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message")
            call.usage = usage_of(message.get("usage") if isinstance(message, dict) else None)
        elif kind == "message_delta":
            # The stop reason: usage from here on is final.
            self.done = True
            call.usage = _merged(call.usage, payload.get("usage"))
        elif kind == "error":
            error = payload.get("error")
            error = error if isinstance(error, dict) else {}
            message = self.scrub(str(error.get("message", "upstream error")))
            call.fail("upstream_error", message)
            return encode({"type": "error", "error": {**error, "message": message}}, "error")
        return event

    def flush(self, tail: bytes) -> bytes:
        return self.relay([tail + b"\n\n"]) if tail.strip() else b""

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        return render.stream_error(*error) if error else b""


def _merged(usage: Usage | None, delta: Any) -> Usage:
    """message_start's usage updated by message_delta's counts: the output always, the
    prompt's counts where the delta restates them."""
    base = usage or Usage()
    if not isinstance(delta, dict):
        return base
    given = {key: delta[key] for key in _COUNTS if isinstance(delta.get(key), int)}
    start = {
        "input_tokens": base.input_tokens - base.cached_tokens - base.cache_write_tokens,
        "cache_read_input_tokens": base.cached_tokens,
        "cache_creation_input_tokens": base.cache_write_tokens,
        "output_tokens": base.output_tokens,
    }
    return usage_of({**start, **given})


_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
