"""Usage the hub estimates when a provider reports none: a stream cut off by the client or
the provider, a whole answer the client hung up on, or a provider that never reports
usage. Never a free call (the counting itself is middleware.tokens)."""

from __future__ import annotations

import json
from typing import Any

from hub.providers.base import text_of
from middleware.call import Call, Usage
from middleware.tokens import CHARS_PER_TOKEN, Family, json_tokens, prompt_tokens, text_tokens

# Model families served by OpenAI-compatible providers (OpenRouter, say) that count images
# their own way, by a word in the model's name.
_FAMILY_WORDS: tuple[tuple[str, Family], ...] = (
    ("claude", "anthropic"),
    ("gemini", "gemini"),
    ("gemma", "gemini"),
)


def family_of(call: Call, kind: str | None) -> Family | None:
    """Whose formula counts the call's images: the model's maker, else the provider kind's;
    None (the largest of them) for a provider the hub does not know."""
    model = (call.upstream_model or call.model).lower()
    for word, family in _FAMILY_WORDS:
        if word in model:
            return family
    if kind in ("openai", "anthropic", "gemini"):
        return kind  # type: ignore[return-value]
    return None


def prompt_usage(call: Call, kind: str | None) -> Usage:
    """What the prompt alone costs: tokens, and for an image call the images asked for
    (the provider makes them, and bills them, whether or not the answer is read)."""
    tokens = prompt_tokens(call.body, family_of(call, kind))
    if call.call_type == "imageGeneration":
        n = call.body.get("n", 1)
        images = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
        return Usage(input_tokens=tokens, images=images)
    return Usage(input_tokens=tokens)


def answer_tokens(payload: Any) -> int:
    """Tokens of the text and tool calls in an OpenAI chat completion, about."""
    tokens = 0
    choices = payload.get("choices") if isinstance(payload, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            tokens += text_tokens(text_of(message.get("content")))
            if message.get("tool_calls"):
                tokens += json_tokens(message["tool_calls"])
    return tokens


def answer_usage(call: Call, kind: str | None, body: bytes) -> Usage:
    """A whole answer that reported no usage: its prompt and its text."""
    usage = prompt_usage(call, kind)
    if call.call_type == "chatCompletion":
        usage.output_tokens = answer_tokens(json.loads(body))
    return usage


def estimate_stream(call: Call, kind: str | None) -> Usage:
    """A stream's usage from what it delivered: its prompt, and its text at four characters
    a token, at least a token per chunk (most providers send one token a chunk)."""
    chars = call.delivered_chars
    if call.delivered_bytes:
        # Passed through unread: every chunk is the same JSON frame around its text, so the
        # text is about what each chunk has beyond the smallest one.
        chars += call.delivered_bytes - call.delivered_chunks * call.smallest_chunk
    usage = prompt_usage(call, kind)
    usage.output_tokens = max(call.delivered_chunks, -(-chars // CHARS_PER_TOKEN))
    return usage
