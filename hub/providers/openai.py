"""The OpenAI protocol, spoken by OpenAI and the OpenAI-compatible family."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from hub.providers.base import (
    StreamTranslator,
    bytes_request,
    count,
    error_fields,
    json_request,
    upstream_headers,
)
from hub.providers.fields import FieldPolicy
from hub.providers.pool import Credential, CredentialPool
from hub.settings import ProviderSettings
from middleware.call import Call, CallType, Usage

# Error codes (or types) by which OpenAI and the compatible family say the key itself is
# refused, whatever the request: invalid, deactivated, or its account out of quota. A 403
# with another code (a country it does not serve, a moderation refusal) is about the request.
_KEY_REFUSALS = frozenset(
    {
        "invalid_api_key",
        "account_deactivated",
        "mismatched_organization",
        "insufficient_quota",
        "billing_not_active",
        "billing_hard_limit_reached",
        "authentication_error",
    }
)

_PATHS: dict[CallType, str] = {
    "chatCompletion": "/chat/completions",
    "embedding": "/embeddings",
    "imageGeneration": "/images/generations",
}


class OpenAIProvider:
    """OpenAI and every base URL that speaks its API: requests and answers pass through."""

    kind = "openai"
    passthrough = True

    def __init__(self, settings: ProviderSettings, timeout: dict[str, float]) -> None:
        self.name = settings.name
        self.base_url = settings.base_url
        self.models = settings.models
        self.timeout = timeout
        # Responses API clients pass through to this provider (else translated to chat).
        self.serves_responses = settings.serves_responses()
        # The client formats whose bytes pass through to this provider untouched.
        self.native_formats = frozenset(
            {"openai", "responses"} if self.serves_responses else {"openai"}
        )
        # Parsed once: URL parsing is a visible share of a proxied request's CPU.
        self._urls = {kind: httpx.URL(self.base_url + path) for kind, path in _PATHS.items()}
        self._responses_url = httpx.URL(self.base_url + "/responses")
        self.pool = CredentialPool(
            settings.api_keys,
            settings.key_weights(),
            lambda key: {stream: self._headers(key, stream) for stream in (False, True)},
            provider=self.name,
        )
        # The client's fields pass as sent (the fields that would cost more than the rate
        # are refused in hub/priced_fields.py): nothing to refuse or drop here.
        self.fields = FieldPolicy(self.name, self.kind, None, settings.drop_unsupported)

    def _headers(self, key: str | None, stream: bool) -> httpx.Headers:
        accept = (b"accept", b"text/event-stream" if stream else b"application/json")
        auth = [(b"authorization", f"Bearer {key}".encode())] if key is not None else []
        return upstream_headers(self._urls["chatCompletion"].netloc, accept, *auth)

    def supports(self, call_type: CallType) -> bool:
        return True

    def build_request(self, call: Call, credential: Credential) -> httpx.Request:
        headers = credential.headers[call.stream]
        url = self._urls[call.call_type]
        if call.dialect == "responses" and self.serves_responses:
            return bytes_request(self._responses_url, headers, _responses_body(call), self.timeout)
        if call.dialect == "openai":
            # Same protocol both ways: send the client's own bytes with only the model
            # renamed, rather than encode the parsed body again.
            content = _patched(call)
            if content is not None:
                return bytes_request(url, headers, content, self.timeout)
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
        return json_request(url, headers, body, self.timeout)

    def translate_response(self, body: bytes, call: Call) -> tuple[bytes, Usage | None]:
        return body, usage_in_body(body, call.call_type)

    def stream_translator(self, call: Call) -> StreamTranslator:
        raise NotImplementedError("OpenAI streams pass through; the proxy taps them for usage")

    def refuses_key(self, status: int, body: bytes) -> bool:
        # 401: not authenticated; 402 (OpenRouter, DeepSeek...): the key's account is out
        # of credit. Neither depends on what the request asked.
        if status in (401, 402):
            return True
        error = error_fields(body)
        return error.get("code") in _KEY_REFUSALS or error.get("type") in _KEY_REFUSALS


_STREAM_USAGE = b'{"stream_options":{"include_usage":true},'


def _patched(call: Call) -> bytes | None:
    """The client's body with the upstream model name (and, for a stream, the usage option),
    or None when the bytes are not plainly laid out enough to patch safely."""
    raw = call.raw_body
    if b"\\u" in raw or (call.stream and "stream_options" in call.body):
        # An escaped key ("mod\\u0065l") is invisible to a byte search but not to the
        # provider's parser; and a client's own stream_options must be merged, not shadowed.
        return None
    key = raw.find(b'"model"')
    if key < 0 or raw.find(b'"model"', key + 7) >= 0:
        return None  # a second "model" key (in a tool schema, say) makes it ambiguous
    at = key + 7
    while raw[at : at + 1] in (b" ", b"\t", b"\n", b"\r"):
        at += 1
    if raw[at : at + 1] != b":":
        return None
    at += 1
    while raw[at : at + 1] in (b" ", b"\t", b"\n", b"\r"):
        at += 1
    asked = json.dumps(call.model).encode()
    if raw[at : at + len(asked)] != asked:
        return None
    patched = raw[:at] + json.dumps(call.upstream_model).encode() + raw[at + len(asked) :]
    if call.dialect == "openai" and call.call_type == "chatCompletion" and call.stream:
        opening = patched.find(b"{")
        if opening < 0:
            return None
        patched = patched[:opening] + _STREAM_USAGE + patched[opening + 1 :]
    return patched


def _responses_body(call: Call) -> bytes:
    """A Responses API client's own body for a provider that serves the API, the model
    renamed (its streams report usage in response.completed without being asked)."""
    patched = _patched(call)
    if patched is not None:
        return patched
    body = json.loads(call.raw_body)
    body["model"] = call.upstream_model
    return json.dumps(body, separators=(",", ":")).encode()


def usage_from(payload: Any, call_type: CallType) -> Usage | None:
    """Usage from an OpenAI response body or stream chunk; None if it carries none."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if call_type == "imageGeneration":
        images = payload.get("data")
        return Usage(
            input_tokens=count(usage, "input_tokens"),
            images=len(images) if isinstance(images, list) else 0,
        )
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    return Usage(
        input_tokens=count(usage, "prompt_tokens"),
        output_tokens=count(usage, "completion_tokens"),
        cached_tokens=count(details, "cached_tokens"),
    )


_DECODER = json.JSONDecoder()
_USAGE_KEY = re.compile(rb'"usage"\s*:\s*')


def usage_in_body(body: bytes, call_type: CallType) -> Usage | None:
    """Usage from a whole response body (None if it reports none); ValueError if not JSON.

    Chat and embedding bodies end with their `usage` object, so only that object is
    decoded: a long completion is not parsed whole just to read three numbers. A quoted
    `"usage"` inside message text is escaped in JSON, so a match is a real key.
    """
    if call_type != "imageGeneration":
        at = body.rfind(b'"usage"')
        match = _USAGE_KEY.match(body, at) if at >= 0 else None
        if match is not None:
            try:
                value, _ = _DECODER.raw_decode(body[match.end() :].decode())
            except (ValueError, UnicodeDecodeError):
                value = None
            usage = usage_from({"usage": value}, call_type)
            if usage is not None:
                return usage
    return usage_from(json.loads(body), call_type)


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
