"""The OpenAI protocol, spoken by OpenAI and the OpenAI-compatible family."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx

from hub.settings import ProviderSettings
from middleware.call import Call, CallType, Usage

_PATHS: dict[CallType, str] = {
    "chatCompletion": "/chat/completions",
    "embedding": "/embeddings",
    "imageGeneration": "/images/generations",
}


class OpenAIProvider:
    """Builds upstream requests and reads usage and errors in the OpenAI wire format."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.base_url = settings.base_url
        self.models = settings.models
        self.secrets = settings.api_keys
        # Rotation over the provider's keys; weighted pools and failover arrive with issue 3.
        self._keys = itertools.cycle(settings.api_keys) if settings.api_keys else None

    def build_request(self, client: httpx.AsyncClient, call: Call) -> httpx.Request:
        body = dict(call.body)
        body["model"] = call.upstream_model
        if call.call_type == "chatCompletion" and call.stream:
            # Always ask for usage so every stream can be billed; the proxy hides the usage
            # chunk from clients that did not ask for it.
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if call.stream else "application/json",
            # Plain bytes: the proxy reads usage out of the stream as it passes.
            "accept-encoding": "identity",
        }
        if self._keys is not None:
            headers["authorization"] = f"Bearer {next(self._keys)}"
        return client.build_request(
            "POST",
            self.base_url + _PATHS[call.call_type],
            content=json.dumps(body, separators=(",", ":")).encode(),
            headers=headers,
        )


def usage_from(payload: Any, call_type: CallType) -> Usage | None:
    """Usage from an OpenAI response body or stream chunk; None if it carries none."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if call_type == "imageGeneration":
        images = payload.get("data")
        count = len(images) if isinstance(images, list) else 0
        tokens = _int(usage, "input_tokens") if isinstance(usage, dict) else 0
        return Usage(input_tokens=tokens, images=count)
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    return Usage(
        input_tokens=_int(usage, "prompt_tokens"),
        output_tokens=_int(usage, "completion_tokens"),
        cached_tokens=_int(details, "cached_tokens") if isinstance(details, dict) else 0,
    )


def error_message(body: bytes) -> str:
    """The human message inside an upstream error body, whatever its shape."""
    try:
        payload = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or "no message"
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return json.dumps(payload)[:500]


def _int(table: Any, key: str) -> int:
    value = table.get(key) if isinstance(table, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
