"""Usage the hub estimates when a provider reports none: a stream cut off by the client or
the provider, or a provider that never reports usage. Never a free call."""

from __future__ import annotations

import json
from typing import Any

from hub.providers.base import text_of
from middleware.call import Call, Usage

# English text averages about four characters per token.
CHARS_PER_TOKEN = 4


def prompt_tokens(call: Call) -> int:
    """Tokens the request's messages and tool definitions come to, about."""
    body = call.body
    chars = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            chars += len(text_of(message.get("content"))) + 4  # role and framing
            if message.get("tool_calls"):
                chars += len(json.dumps(message["tool_calls"]))
    if body.get("tools"):
        chars += len(json.dumps(body["tools"]))
    if isinstance(body.get("input"), str | list):  # embeddings
        chars += len(json.dumps(body["input"]))
    return max(1, -(-chars // CHARS_PER_TOKEN))


def answer_tokens(payload: Any) -> int:
    """Tokens of the text and tool calls in an OpenAI chat completion, about."""
    chars = 0
    choices = payload.get("choices") if isinstance(payload, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            chars += len(text_of(message.get("content")))
            if message.get("tool_calls"):
                chars += len(json.dumps(message["tool_calls"]))
    return -(-chars // CHARS_PER_TOKEN)


def estimate_stream(call: Call) -> Usage:
    """A stream's usage from what it delivered: its text at four characters a token, and
    at least a token per chunk (most providers send one token a chunk)."""
    chars = call.delivered_chars
    if call.delivered_bytes:
        # Passed through unread: every chunk is the same JSON frame around its text, so the
        # text is about what each chunk has beyond the smallest one.
        chars += call.delivered_bytes - call.delivered_chunks * call.smallest_chunk
    output = max(call.delivered_chunks, -(-chars // CHARS_PER_TOKEN))
    return Usage(input_tokens=prompt_tokens(call), output_tokens=output)
