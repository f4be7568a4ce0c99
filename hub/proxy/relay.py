"""Relaying a stream that is not passed through: upstream events read into normalized
(OpenAI) chunks, then written by the client format's StreamRender."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hub.dialects.base import StreamRender
from hub.estimate import estimate_stream
from hub.providers.base import StreamTranslator
from hub.providers.openai import usage_from
from hub.sse import json_data
from middleware.call import Call


class OpenAISource:
    """OpenAI stream events as chunk objects (for a client that speaks another format)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.finished = False

    def feed(self, event: bytes) -> list[dict[str, Any]]:
        payload = json_data(event)
        if not isinstance(payload, dict):
            self.finished = self.finished or b"[DONE]" in event
            return []
        usage = usage_from(payload, self.call.call_type)
        if usage is not None:
            self.call.usage = usage
        return [payload]


class TranslatedSource:
    """Another protocol's events as OpenAI chunk objects, by the provider's translator."""

    def __init__(self, call: Call, translator: StreamTranslator) -> None:
        self.call = call
        self.translator = translator

    @property
    def finished(self) -> bool:
        return self.translator.finished

    def feed(self, event: bytes) -> list[dict[str, Any]]:
        items = self.translator.feed(event)
        if self.translator.usage is not None:
            self.call.usage = self.translator.usage
        return items


class Converted:
    """Events read into OpenAI chunk objects, then written in the client's format."""

    def __init__(
        self,
        call: Call,
        source: OpenAISource | TranslatedSource,
        render: StreamRender,
        scrub: Callable[[str], str],
    ) -> None:
        self.call = call
        self.source = source
        self.render = render
        self.scrub = scrub

    @property
    def complete(self) -> bool:
        return self.source.finished

    def relay(self, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            try:
                out.append(self._one(event))
            except (TypeError, ValueError, KeyError, AttributeError, IndexError):
                # An event the hub cannot read (or render) ends the answer with an error the
                # client's format understands, rather than cutting the connection.
                message = f"Provider '{self.call.provider}' sent an event the hub cannot read."
                self.call.fail("upstream_error", message)
                out.append(self.render.error("upstream_error", message))
        return b"".join(out)

    def _one(self, event: bytes) -> bytes:
        out = []
        chunks: list[dict[str, Any]] = []
        for item in self.source.feed(event):
            if isinstance(item.get("error"), dict):
                message = self.scrub(str(item["error"].get("message")))
                self.call.fail("upstream_error", message)
                out.append(self.render.chunks(chunks))
                out.append(self.render.error("upstream_error", message))
                chunks = []
                continue
            if item.get("choices"):
                self.call.delivered_chunks += 1
                self.call.delivered_chars += _delta_chars(item)
            chunks.append(item)
        out.append(self.render.chunks(chunks))
        return b"".join(out)

    def flush(self, tail: bytes) -> bytes:
        return self.relay([tail]) if tail.strip() else b""

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        if error:
            return self.render.error(*error)
        if self.call.error_code is not None:
            return b""  # the error went out already, as it arrived
        return self.render.close(credits)


def _delta_chars(chunk: dict[str, Any]) -> int:
    delta = (chunk["choices"][0] or {}).get("delta") or {}
    chars = len(delta.get("content") or "")
    for tool in delta.get("tool_calls") or []:
        chars += len((tool.get("function") or {}).get("arguments") or "")
    return chars


def ensure_usage(call: Call, complete: bool, kind: str | None) -> None:
    """Bill a stream for what it delivered, estimated and marked so, rather than give it
    away: when no usage was reported (cut off, hung up on, or a provider that reports
    none), or when the stream ended early and its reported output (which may be partial)
    is below it. The prompt is counted the way provider `kind` counts it."""
    if call.usage is not None and complete:
        return
    estimate = estimate_stream(call, kind)
    if call.usage is None:
        call.usage = estimate
    elif estimate.output_tokens > call.usage.output_tokens:
        call.usage = replace(call.usage, output_tokens=estimate.output_tokens)
    else:
        return
    call.usage_estimated = True
