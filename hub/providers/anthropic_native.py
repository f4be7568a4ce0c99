"""The upstream request for a client that speaks Anthropic Messages itself (the `anthropic`
SDKs, Claude Code): its own body, with only the model renamed, so nothing it asked for is
lost in translation; and the `anthropic-version` / `anthropic-beta` it sent."""

from __future__ import annotations

import json
import re

import httpx

from hub.providers.base import bytes_request
from middleware.call import Call

# Headers of the client's passed on: the API version its body is written for, and the
# beta features it uses (interleaved thinking, fine-grained tool streaming, ...).
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")
_MODEL_KEY = re.compile(rb'"model"\s*:\s*')


def native_request(
    url: httpx.URL, headers: httpx.Headers, call: Call, timeout: dict[str, float]
) -> httpx.Request:
    """POST the client's body to `url` with the key's `headers` and the client's own."""
    wanted = [(name, call.passed_headers.get(name)) for name in PASSED_HEADERS]
    if any(value for _, value in wanted if value is not None):
        headers = headers.copy()
        for name, value in wanted:
            if value is not None:
                headers[name] = value
    return bytes_request(url, headers, renamed(call), timeout)


def renamed(call: Call) -> bytes:
    """The raw body with the upstream model name. Patched in place when `"model"` occurs
    once, plainly (most bodies); encoded again when it could be ambiguous (a tool schema
    with a `model` property, escaped keys)."""
    raw = call.raw_body
    found = list(_MODEL_KEY.finditer(raw))
    asked = json.dumps(call.model).encode()
    if len(found) == 1 and b"\\u" not in raw:
        at = found[0].end()
        if raw[at : at + len(asked)] == asked:
            return raw[:at] + json.dumps(call.upstream_model).encode() + raw[at + len(asked) :]
    body = json.loads(raw)
    body["model"] = call.upstream_model
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
