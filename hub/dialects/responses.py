"""The OpenAI Responses API client format (`POST /v1/responses`), as the `openai` SDKs'
`client.responses` and Codex speak it.

Requests are read into the normalized chat body (responses_request), answers from other
protocols rendered back (responses_render). Providers that serve the Responses API
themselves (OpenAI; see OpenAIProvider.serves_responses) get the client's own bytes with
only the model renamed, and their answer comes back byte for byte, tapped for usage in
`response.completed` (streams) or the body's `usage`. Errors are OpenAI's shape: the
Responses API answers errors as chat completions does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hub.dialects import responses_render
from hub.dialects.responses_request import normalize
from hub.dialects.responses_stream import ResponsesStream
from hub.providers.base import count
from hub.sse import encode, json_data
from middleware.call import Call, CallType, Usage
from middleware.errors import error_body

# The events whose `response` carries the answer's final usage.
_ENDS = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')
_DELTAS = (b'"response.output_text.delta"', b'"response.function_call_arguments.delta"')


class Responses:
    name = "responses"
    native_kind: str | None = "openai"
    shows_credits = False

    def normalize(self, body: dict[str, Any], call_type: CallType) -> dict[str, Any]:
        return normalize(body)

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes:
        return error_body(status, code, message, param)

    def answer(self, call: Call, completion: bytes, credits: int) -> bytes:
        return responses_render.answer(call, completion)

    def stream(self, call: Call) -> ResponsesStream:
        return ResponsesStream(call)

    def native_answer(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        payload = json.loads(body)
        return body, usage_of(payload.get("usage") if isinstance(payload, dict) else None)

    def native_stream(self, call: Call, scrub: Callable[[str], str]) -> PassThrough:
        return PassThrough(call, scrub)


RESPONSES = Responses()


def usage_of(usage: Any) -> Usage | None:
    """A Responses API `usage` object as the hub's Usage; None if there is none."""
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=count(usage, "input_tokens"),
        output_tokens=count(usage, "output_tokens"),
        cached_tokens=count(usage.get("input_tokens_details"), "cached_tokens"),
    )


class PassThrough:
    """A Responses stream from a provider that speaks it: events go out as they came,
    tapped for usage; error events fail the call, their messages scrubbed of keys."""

    def __init__(self, call: Call, scrub: Callable[[str], str]) -> None:
        self.call = call
        self.scrub = scrub
        self.done = False
        self.events = 0  # the provider numbers its events from 0: the next number is this
        self.response_id: str | None = None

    @property
    def complete(self) -> bool:
        return self.done

    def relay(self, events: list[bytes]) -> bytes:
        out: list[bytes] = []
        for event in events:
            self.events += 1
            if any(kind in event for kind in _DELTAS):
                self.call.delivered_chunks += 1
                self.call.delivered_bytes += len(event)
                if not self.call.smallest_chunk or len(event) < self.call.smallest_chunk:
                    self.call.smallest_chunk = len(event)
            elif b'"response.created"' in event and self.response_id is None:
                payload = json_data(event)
                response = payload.get("response") if isinstance(payload, dict) else None
                if isinstance(response, dict):
                    self.response_id = str(response.get("id"))
            elif any(kind in event for kind in _ENDS) or b'"error"' in event:
                event = self._end(event)
            out.append(event)
        return b"".join(out)

    def _end(self, event: bytes) -> bytes:
        payload = json_data(event)
        if not isinstance(payload, dict):
            return event
        kind = payload.get("type")
        response = payload.get("response")
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self.done = True
            usage = usage_of(response.get("usage") if isinstance(response, dict) else None)
            if usage is not None:
                self.call.usage = usage
        error: Any = None
        if kind == "error":
            error = payload
        elif kind == "response.failed" and isinstance(response, dict):
            error = response.get("error")
        if not isinstance(error, dict):
            return event
        message = self.scrub(str(error.get("message", "upstream error")))
        self.call.fail("upstream_error", message)
        error["message"] = message
        return encode(payload, event=str(kind))

    def flush(self, tail: bytes) -> bytes:
        return self.relay([tail + b"\n\n"]) if tail.strip() else b""

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        if error is None:
            return b""  # the provider ended its own stream
        code, message = error
        first = {"type": "error", "sequence_number": self.events}
        out = encode({**first, "code": code, "message": message, "param": None}, event="error")
        failed: dict[str, Any] = {
            "id": self.response_id or responses_render.response_id(self.call),
            "object": "response",
            "status": "failed",
            "model": self.call.model,
            "output": [],
            "error": {"code": code, "message": message},
            "usage": responses_render.responses_usage(self.call.usage),
        }
        out += encode(
            {"type": "response.failed", "sequence_number": self.events + 1, "response": failed},
            event="response.failed",
        )
        return out
