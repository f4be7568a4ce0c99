"""Google Gemini (generateContent / streamGenerateContent): OpenAI chat in, OpenAI out."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any
from urllib.parse import quote

import httpx

from hub.providers.base import (
    Turns,
    assistant_message,
    bytes_request,
    chunk,
    completion,
    count,
    error_fields,
    error_item,
    json_request,
    text_of,
    tool_arguments,
    upstream_headers,
)
from hub.providers.fields import FieldPolicy, apply_fields, data_url
from hub.providers.gemini_fields import FIELDS
from hub.providers.pool import Credential, CredentialPool
from hub.settings import ProviderSettings
from hub.sse import event_data
from middleware.call import Call, CallType, Usage
from middleware.tokens import prompt_tokens

FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
# JSON Schema keywords Gemini's function declarations reject.
_UNSUPPORTED_SCHEMA = {"additionalProperties", "$schema", "strict", "$id", "$defs", "default"}


# ErrorInfo reasons Google gives for a key refused whatever the request: invalid or expired,
# its project suspended, the API blocked for the key or not enabled for its project, its
# billing off, or the key restricted to other callers.
KEY_REFUSALS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "CONSUMER_SUSPENDED",
        "API_KEY_SERVICE_BLOCKED",
        "SERVICE_DISABLED",
        "BILLING_DISABLED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
    }
)


class GeminiProvider:
    kind = "gemini"
    passthrough = False

    def __init__(self, settings: ProviderSettings, timeout: dict[str, float]) -> None:
        self.name = settings.name
        self.models = settings.models
        self.timeout = timeout
        base = settings.base_url.rstrip("/")
        self.base = base if base.endswith(("/v1beta", "/v1")) else base + "/v1beta"
        self._host = httpx.URL(self.base).netloc
        self._urls: dict[tuple[str, str], httpx.URL] = {}
        self.pool = CredentialPool(
            settings.api_keys, settings.key_weights(), self._headers, provider=self.name
        )
        self.fields = FieldPolicy(self.name, self.kind, FIELDS, settings.drop_unsupported)

    def _headers(self, key: str | None) -> httpx.Headers:
        auth = [(b"x-goog-api-key", key.encode())] if key is not None else []
        return upstream_headers(self._host, *auth)

    def _url(self, model: str, method: str) -> httpx.URL:
        url = self._urls.get((model, method))
        if url is None:
            # The model name comes from the client: it must stay one path segment.
            url = httpx.URL(f"{self.base}/models/{quote(model, safe='-._~')}:{method}")
            if len(self._urls) >= 1024:  # unpriced names (self-hosted) must not grow it forever
                self._urls.clear()
            self._urls[(model, method)] = url
        return url

    def supports(self, call_type: CallType) -> bool:
        return call_type in ("chatCompletion", "embedding", "imageGeneration")

    def build_request(self, call: Call, credential: Credential) -> httpx.Request:
        model = str(call.upstream_model)
        if call.call_type == "embedding":
            url = self._url(model, "batchEmbedContents")
            return json_request(url, credential.headers, to_gemini_embeddings(call), self.timeout)
        if call.call_type == "imageGeneration":
            url = self._url(model, "predict")
            return json_request(url, credential.headers, to_imagen(call), self.timeout)
        method = "streamGenerateContent?alt=sse" if call.stream else "generateContent"
        if call.dialect == "gemini":
            # The client speaks Gemini itself: its own bytes go (the model is in the URL),
            # so nothing it asked for (safetySettings, topK, Google's tools) is lost.
            url = self._url(model, method)
            return bytes_request(url, credential.headers, call.raw_body, self.timeout)
        return json_request(
            self._url(model, method), credential.headers, to_gemini(call), self.timeout
        )

    def translate_response(self, body: bytes, call: Call) -> tuple[bytes, Usage | None]:
        answer = json.loads(body)
        if not isinstance(answer, dict):
            raise ValueError("not a Gemini response")
        if call.call_type == "embedding":
            # Gemini reports no usage for embeddings: the proxy estimates it (and says so).
            vectors: list[Any] = [e["values"] for e in answer["embeddings"]]
            if call.body.get("encoding_format") == "base64":
                # What OpenAI sends when asked (the Node SDK asks by default): little-endian
                # float32s, base64-encoded.
                vectors = [
                    base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors
                ]
            estimate = prompt_tokens(call.body, "gemini")
            result = {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": v}
                    for i, v in enumerate(vectors)
                ],
                "model": call.model,
                "usage": {"prompt_tokens": estimate, "total_tokens": estimate},
            }
            return json.dumps(result).encode(), None
        if call.call_type == "imageGeneration":
            return _images(answer)
        usage = usage_of(answer.get("usageMetadata"))
        choices = []
        # Several candidates when the caller asked for n > 1: one choice each.
        for index, candidate in enumerate(answer.get("candidates") or [{}]):
            text, thoughts, calls = _parts(candidate, 0)
            message = assistant_message(text, [c for _, c in calls])
            if thoughts:
                message["reasoning_content"] = thoughts
            finish = _finish(candidate.get("finishReason"), bool(calls)) or "stop"
            choices.append({"index": index, "message": message, "finish_reason": finish})
        result = completion(call, {}, None, usage, str(answer.get("responseId", "gemini")))
        result["choices"] = choices
        return json.dumps(result).encode(), usage

    def stream_translator(self, call: Call) -> GeminiStream:
        return GeminiStream(call)

    def refuses_key(self, status: int, body: bytes) -> bool:
        # Google answers an invalid key with 400 INVALID_ARGUMENT, and a key blocked or
        # suspended with 403 PERMISSION_DENIED: what tells them from a bad request, or a model
        # this key may not use, is the ErrorInfo reason in the details.
        error = error_fields(body)
        if status == 401 or error.get("status") == "UNAUTHENTICATED":
            return True
        details = error.get("details")
        return isinstance(details, list) and any(
            isinstance(d, dict) and d.get("reason") in KEY_REFUSALS for d in details
        )


def to_gemini(call: Call) -> dict[str, Any]:
    """The generateContent request for an OpenAI chat request."""
    body = call.body
    system: list[str] = []
    turns = Turns("parts")
    add = turns.add
    names: dict[str, str] = {}  # tool call id -> function name, for functionResponse

    for message in body.get("messages", []):
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system.append(text_of(content))
        elif role == "user":
            add("user", _user_parts(content))
        elif role == "assistant":
            parts: list[dict[str, Any]] = []
            if text_of(content):
                parts.append({"text": text_of(content)})
            for tool_call in message.get("tool_calls") or []:
                function = tool_call.get("function", {})
                names[str(tool_call.get("id", ""))] = str(function.get("name", ""))
                parts.append(
                    {
                        "functionCall": {
                            "name": function.get("name", ""),
                            "args": tool_arguments(function.get("arguments")),
                        }
                    }
                )
            add("model", parts)
        elif role == "tool":
            result = tool_arguments(text_of(content))
            add(
                "user",
                [
                    {
                        "functionResponse": {
                            "name": names.get(str(message.get("tool_call_id", "")), "tool"),
                            "response": result
                            if "_raw" not in result
                            else {"content": text_of(content)},
                        }
                    }
                ],
            )
    request: dict[str, Any] = {"contents": turns.turns}
    if system:
        request["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    # The options, as the table says (see gemini_fields.py).
    apply_fields(request, body, FIELDS)
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
    if tools:
        request["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t["function"].get("name", ""),
                        "description": t["function"].get("description", ""),
                        "parameters": _schema(
                            t["function"].get("parameters") or {"type": "object"}
                        ),
                    }
                    for t in tools
                ]
            }
        ]
        mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(str(body.get("tool_choice")))
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            request["toolConfig"] = {
                "functionCallingConfig": {
                    "mode": "ANY",
                    "allowedFunctionNames": [choice["function"].get("name", "")],
                }
            }
        elif mode:
            request["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    return request


def to_gemini_embeddings(call: Call) -> dict[str, Any]:
    """The batchEmbedContents request for an OpenAI embeddings request."""
    given = call.body["input"]
    if not isinstance(given, str) and not all(isinstance(t, str) for t in given):
        raise ValueError("Gemini embeds text only: token arrays cannot be sent to it")
    texts = [given] if isinstance(given, str) else list(given)
    model = f"models/{call.upstream_model}"
    request = {"model": model}
    if isinstance(call.body.get("dimensions"), int):
        request["outputDimensionality"] = call.body["dimensions"]
    return {"requests": [{**request, "content": {"parts": [{"text": t}]}} for t in texts]}


# The aspect ratios Imagen draws, for the OpenAI `size` nearest to each.
_ASPECTS = {"1:1": 1.0, "4:3": 4 / 3, "3:4": 3 / 4, "16:9": 16 / 9, "9:16": 9 / 16}


def to_imagen(call: Call) -> dict[str, Any]:
    """The Imagen :predict request for an OpenAI image generation request."""
    body = call.body
    parameters: dict[str, Any] = {}
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        parameters["sampleCount"] = n
    width, _, height = str(body.get("size") or "").partition("x")
    if width.isdigit() and height.isdigit() and int(width) and int(height):
        ratio = int(width) / int(height)
        parameters["aspectRatio"] = min(_ASPECTS, key=lambda a: abs(_ASPECTS[a] - ratio))
    return {"instances": [{"prompt": body["prompt"]}], "parameters": parameters}


def _images(answer: dict[str, Any]) -> tuple[bytes, Usage]:
    """Imagen's predictions as an OpenAI images answer: base64 images (Imagen makes no URLs),
    billed per image."""
    images = [
        {"b64_json": p["bytesBase64Encoded"]}
        for p in answer.get("predictions") or []
        if isinstance(p, dict) and p.get("bytesBase64Encoded")
    ]
    result = {"created": int(time.time()), "data": images}
    return json.dumps(result).encode(), Usage(images=len(images))


def _user_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                mime, _, data = url[5:].partition(";base64,")
                parts.append({"inlineData": {"mimeType": mime, "data": data}})
            else:
                parts.append({"fileData": {"fileUri": url}})
        elif part.get("type") == "file" and (found := data_url(part.get("file"), "file_data")):
            parts.append({"inlineData": {"mimeType": found[0], "data": found[1]}})
        elif part.get("type") == "input_audio" and isinstance(part.get("input_audio"), dict):
            audio = part["input_audio"]
            mime = f"audio/{audio.get('format') or 'wav'}"
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
    return parts


def _schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _schema(v) for k, v in schema.items() if k not in _UNSUPPORTED_SCHEMA}
    if isinstance(schema, list):
        return [_schema(v) for v in schema]
    return schema


def _parts(candidate: dict[str, Any], first_index: int) -> tuple[str, str, list[tuple[int, Any]]]:
    """Text, thoughts (asked for by reasoning_effort) and OpenAI tool calls of a candidate."""
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[tuple[int, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "text" in part:
            (thoughts if part.get("thought") else text).append(str(part["text"]))
        elif isinstance(part.get("functionCall"), dict):
            index = first_index + len(calls)
            function_call = part["functionCall"]
            calls.append(
                (
                    index,
                    {
                        "id": str(function_call.get("id") or f"call_{index}"),
                        "type": "function",
                        "function": {
                            "name": str(function_call.get("name", "")),
                            "arguments": json.dumps(function_call.get("args") or {}),
                        },
                    },
                )
            )
    return "".join(text), "".join(thoughts), calls


def _finish(reason: Any, has_calls: bool) -> str | None:
    if not reason:
        return None
    if has_calls:
        return "tool_calls"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "stop"


def usage_of(raw: Any) -> Usage:
    """OpenAI-style usage from usageMetadata; thinking tokens are billed as output."""
    return Usage(
        input_tokens=count(raw, "promptTokenCount"),
        output_tokens=count(raw, "candidatesTokenCount") + count(raw, "thoughtsTokenCount"),
        cached_tokens=count(raw, "cachedContentTokenCount"),
    )


class GeminiStream:
    """streamGenerateContent (alt=sse) events to OpenAI chunks; usage is cumulative. With
    n > 1 (candidateCount) each candidate is a choice of its own, by its index."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.usage: Usage | None = None
        self.finished = False
        self.id = "gemini"
        self._started = False
        n = call.body.get("n")
        self._choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        self._calls: dict[int, int] = {}  # tool calls so far, per choice
        self._done: set[int] = set()

    def feed(self, event: bytes) -> list[dict[str, Any]]:
        data = event_data(event)
        if not data:
            return []
        try:
            payload = json.loads(data)
        except ValueError:
            return []
        if isinstance(payload.get("error"), dict):
            return [error_item(payload["error"], "status")]
        out: list[dict[str, Any]] = []
        if payload.get("usageMetadata"):
            self.usage = usage_of(payload["usageMetadata"])
        if not self._started:
            self._started = True
            self.id = str(payload.get("responseId", self.id))
            for index in range(self._choices):
                out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        for position, candidate in enumerate(payload.get("candidates") or [{}]):
            index = candidate.get("index", position)
            out += self._candidate(index if isinstance(index, int) else position, candidate)
        return out

    def _candidate(self, index: int, candidate: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        text, thoughts, calls = _parts(candidate, self._calls.get(index, 0))
        self._calls[index] = self._calls.get(index, 0) + len(calls)
        if thoughts:
            out.append(self._chunk(index, {"reasoning_content": thoughts}))
        if text:
            out.append(self._chunk(index, {"content": text}))
        if calls:
            deltas = [{"index": at, **tool_call} for at, tool_call in calls]
            out.append(self._chunk(index, {"tool_calls": deltas}))
        finish = _finish(candidate.get("finishReason"), self._calls[index] > 0)
        if finish:
            self._done.add(index)
            self.finished = len(self._done) >= self._choices
            out.append(self._chunk(index, {}, finish))
        return out

    def _chunk(
        self, index: int, delta: dict[str, Any], finish: str | None = None
    ) -> dict[str, Any]:
        item = chunk(self.call, self.id, delta, finish)
        item["choices"][0]["index"] = index
        return item
