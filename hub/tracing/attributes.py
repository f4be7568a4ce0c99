"""What a model call's span says, in the OpenTelemetry GenAI semantic conventions.

Never the prompt or the answer unless the operator turns `capture_content` on; even then
only the request's messages: the hub passes answers through as they stream, it does not
keep their text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from middleware.call import Call
from middleware.money import credits_text

Attributes = dict[str, Any]

# gen_ai.operation.name per call type; images have no well-known name, so the closest one.
OPERATIONS = {
    "chatCompletion": "chat",
    "embedding": "embeddings",
    "imageGeneration": "generate_content",
}
# gen_ai.provider.name's well-known values for the hub's preset providers; other providers
# (an operator's own names) are reported by their name, as the conventions allow.
PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "groq": "groq",
    "mistral": "mistral_ai",
}
# Request fields copied as gen_ai.request.* when the caller set them (numbers only).
REQUEST_NUMBERS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
}


def span_name(call: Call) -> str:
    return f"{OPERATIONS.get(call.call_type, call.call_type)} {call.model}"


def request_attributes(call: Call, capture_content: bool) -> Attributes:
    """Known when the span starts: what was asked, by which client format."""
    attributes: Attributes = {
        "gen_ai.operation.name": OPERATIONS.get(call.call_type, call.call_type),
        "gen_ai.request.model": call.model,
        "aigne_hub.call.id": call.id,
        "aigne_hub.client_format": call.dialect,
        "aigne_hub.stream": call.stream,
    }
    if call.request_id:
        attributes["aigne_hub.request.id"] = call.request_id
    for field, name in REQUEST_NUMBERS.items():
        value = call.body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    if capture_content:
        messages = _messages(call.body)
        if messages is not None:
            attributes["gen_ai.input.messages"] = messages
    return attributes


def result_attributes(
    call: Call, servers: Mapping[str, tuple[str, int | None]], failure: str | None
) -> Attributes:
    """Known once the call is settled: who answered, the tokens, the credits, the status."""
    attributes: Attributes = {"aigne_hub.status": call.status}
    if call.provider is not None:
        provider = PROVIDER_NAMES.get(call.provider, call.provider)
        # gen_ai.system is the name older tracing back ends still read.
        attributes["gen_ai.provider.name"] = provider
        attributes["gen_ai.system"] = provider
        attributes["aigne_hub.provider"] = call.provider
        server = servers.get(call.provider)
        if server is not None:
            attributes["server.address"] = server[0]
            if server[1] is not None:
                attributes["server.port"] = server[1]
    if call.upstream_model is not None:
        attributes["gen_ai.response.model"] = call.upstream_model
    usage = call.usage
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cached_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
        attributes["aigne_hub.usage.estimated"] = call.usage_estimated
    if call.ttfb_ms is not None:
        # Seconds, as the conventions' time-to-first-token metric counts them.
        attributes["gen_ai.server.time_to_first_token"] = call.ttfb_ms / 1000
    if call.charge is not None:
        # Exact decimal text: a float would round the integer units.
        attributes["aigne_hub.credits"] = credits_text(call.charge)
    if call.http_status is not None:
        attributes["http.response.status_code"] = call.http_status
    if call.attempts:
        attributes["aigne_hub.upstream.attempts"] = call.attempts
    error = call.error_code or failure
    if error is not None:
        attributes["error.type"] = error
    return attributes


def _messages(body: Mapping[str, Any]) -> str | None:
    """The caller's input as JSON text: chat messages, Responses input or a prompt."""
    for field in ("messages", "input", "contents", "prompt"):
        if field in body:
            return json.dumps(body[field], ensure_ascii=False, default=str)
    return None
