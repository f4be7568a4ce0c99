"""Gemini's own API as a client format: `google-genai` and Google's REST shape.

Routes (hub/routes.py): `POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, the model from the path (slashes allowed, so
`fake-gemini/gemini-2.5-flash` works); `:countTokens` is answered by gemini_count.
Requests are read by gemini_request, answers rendered by gemini_render. To a Gemini
provider the call passes through: the client's own body goes upstream (the Gemini adapter
builds it from `call.raw_body`, the model being in the URL) and the answer comes back as
the provider sent it, tapped for usageMetadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hub.dialects.base import Relay, StreamRender
from hub.dialects.gemini_options import (
    NATIVE_ONLY_TOP,
    NO_OPENAI_CONFIG,
    gemini_only,
    unsupported,
)
from hub.dialects.gemini_render import GeminiRender, answer, dumps, error_body, stream_error
from hub.dialects.gemini_request import normalize
from hub.providers.gemini import usage_of
from hub.sse import json_data
from middleware.call import Call, CallType, Usage
from middleware.errors import HubError

# Bytes that must be in a body for it to hold a Gemini-only field: most bodies skip the
# second parse. Google's tools are named in a tools entry without functionDeclarations.
_NATIVE_MARKS = tuple(name.encode() for name in (*NATIVE_ONLY_TOP, *NO_OPENAI_CONFIG, "tools"))


def _mentions_native_only(raw: bytes) -> bool:
    return b"\\u" in raw or any(mark in raw for mark in _NATIVE_MARKS)


class Gemini:
    name = "gemini"
    native_kind: str | None = "gemini"
    shows_credits = False

    def normalize(self, body: dict[str, Any], call_type: CallType) -> dict[str, Any]:
        return normalize(body)

    def refusal(self, call: Call, kind: str) -> HubError | None:
        """Fields only a Gemini provider honours (safetySettings, topK, Google Search...),
        refused by name when the call goes to another provider kind (the proxy lets them
        drop, logged by name, where that provider's operator set `drop_unsupported`)."""
        if kind == self.native_kind or not _mentions_native_only(call.raw_body):
            return None
        found = gemini_only(json.loads(call.raw_body), kind)
        if found is None:
            return None
        return unsupported(found, f"only Gemini providers honour it, not a provider of kind {kind}")

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes:
        return error_body(status, code, message, param)

    def answer(self, call: Call, completion: bytes, credits: int) -> bytes:
        return dumps(answer(call, json.loads(completion)))

    def stream(self, call: Call) -> StreamRender:
        return GeminiRender(call)

    def native_answer(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError("not a Gemini response")
        metadata = payload.get("usageMetadata")
        return body, usage_of(metadata) if isinstance(metadata, dict) else None

    def native_stream(self, call: Call, scrub: Callable[[str], str]) -> Relay:
        return GeminiPassThrough(call, scrub)


GEMINI = Gemini()


class GeminiPassThrough:
    """Gemini on both sides: events go out as they came. usageMetadata is cumulative, so
    the last one read is the call's usage; a finishReason means the answer is whole."""

    def __init__(self, call: Call, scrub: Callable[[str], str]) -> None:
        self.call = call
        self.scrub = scrub
        self.done = False

    @property
    def complete(self) -> bool:
        return self.done

    def relay(self, events: list[bytes]) -> bytes:
        kept: list[bytes] = []
        for event in events:
            payload = json_data(event)
            if not isinstance(payload, dict):
                kept.append(event)
                continue
            if isinstance(payload.get("error"), dict):
                message = self.scrub(str(payload["error"].get("message", "upstream error")))
                self.call.fail("upstream_error", message)
                kept.append(stream_error("upstream_error", message))
                continue
            if isinstance(payload.get("usageMetadata"), dict):
                self.call.usage = usage_of(payload["usageMetadata"])
            candidates = payload.get("candidates")
            if isinstance(candidates, list) and candidates:
                self.call.delivered_chunks += 1
                self.call.delivered_bytes += len(event)
                if not self.call.smallest_chunk or len(event) < self.call.smallest_chunk:
                    self.call.smallest_chunk = len(event)
                if any(isinstance(c, dict) and c.get("finishReason") for c in candidates):
                    self.done = True
            kept.append(event)
        return b"".join(kept)

    def flush(self, tail: bytes) -> bytes:
        return self.relay([tail + b"\r\n\r\n"]) if tail.strip() else b""

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        return stream_error(*error) if error else b""
