"""Request fields that make a provider charge more than the hub's rate for the model covers.

The OpenAI pass-through forwards the client's bytes, so a field such as `service_tier:
"priority"` would reach the provider and bill the operator above what the caller pays.
Each such field is refused (400 `unsupported_parameter`, naming it) for the provider kinds
that would act on it; values that cost no more than the default pass. Only a few top-level
keys of the body the Call middleware already parsed are looked at: nothing is parsed again.
Adapters that translate the request (Anthropic, Gemini) build it from known fields only, so
for them only what they carry over matters (Anthropic's prompt-cache TTL).
"""

from __future__ import annotations

from typing import Any

from middleware.call import Call

# Values priced like the default (or below it); any other value is refused.
_SERVICE_TIERS = frozenset({"auto", "default", "flex"})
_IMAGE_QUALITIES = frozenset({"auto", "standard", "low"})
# The default image size; smaller ones cost the same or less.
_DEFAULT_IMAGE_PIXELS = 1024 * 1024
# Anthropic's default prompt-cache lifetime: writes at the model's cache-write rate. The
# 1-hour one costs twice the input rate, a rate the hub does not keep.
_CACHE_TTLS = frozenset({"5m"})

# OpenAI-protocol fields that buy something the model's rate does not cover, present at all.
_CHAT_EXTRAS = {
    "models": "OpenRouter's fallback models, which may cost more than the one priced",
    "route": "OpenRouter's fallback routing",
    "provider": "OpenRouter's provider routing, which may pick a dearer provider",
    "plugins": "OpenRouter's plugins (web search, file parsing), billed on top",
    "web_search_options": "web search, billed per search",
    "audio": "audio output, billed at audio rates",
}


def refused_field(call: Call, kind: str) -> tuple[str, str] | None:
    """(param, why) for the first field this provider kind would charge extra for."""
    if kind == "openai" and call.call_type == "imageGeneration":
        return _image_field(call.body)
    if kind not in ("openai", "anthropic") or call.call_type != "chatCompletion":
        return None
    refused = _chat_field(call.body) if kind == "openai" else None
    if refused is None and (b'"ttl"' in call.raw_body or b"\\u" in call.raw_body):
        # Anthropic's, or OpenRouter's for Claude models. The TTL sits deep in messages and
        # tools: walked only when the bytes mention one.
        refused = _cache_ttl(call.body)
    return refused


def _chat_field(body: dict[str, Any]) -> tuple[str, str] | None:
    tier = body.get("service_tier")
    if tier is not None and tier not in _SERVICE_TIERS:
        return "service_tier", f"service tier {_shown(tier)} costs more than the default"
    for name, why in _CHAT_EXTRAS.items():
        # Present at all: an empty `web_search_options` still turns search on.
        if body.get(name) is not None:
            return name, why
    return None


def _image_field(body: dict[str, Any]) -> tuple[str, str] | None:
    quality = body.get("quality")
    if quality is not None and quality not in _IMAGE_QUALITIES:
        return "quality", f"image quality {_shown(quality)} costs more than the default"
    size = body.get("size")
    if size is not None and size != "auto" and _pixels(size) > _DEFAULT_IMAGE_PIXELS:
        return "size", f"image size {_shown(size)} costs more than 1024x1024"
    if body.get("partial_images"):
        return "partial_images", "partial images are billed on top of the image"
    return None


def _cache_ttl(body: dict[str, Any]) -> tuple[str, str] | None:
    marked: list[tuple[str, Any]] = []
    for i, message in enumerate(_list(body.get("messages"))):
        if isinstance(message, dict):
            marked.append((f"messages[{i}]", message))
            for j, part in enumerate(_list(message.get("content"))):
                marked.append((f"messages[{i}].content[{j}]", part))
    marked += [(f"tools[{k}]", tool) for k, tool in enumerate(_list(body.get("tools")))]
    for where, item in marked:
        mark = item.get("cache_control") if isinstance(item, dict) else None
        ttl = mark.get("ttl") if isinstance(mark, dict) else None
        if ttl is not None and ttl not in _CACHE_TTLS:
            why = f"a prompt cache TTL of {_shown(ttl)} is billed above the cache-write rate"
            return f"{where}.cache_control.ttl", why
    return None


def _pixels(size: Any) -> int:
    """Width times height of a "WxH" size; unreadable sizes count as too large."""
    width, _, height = str(size).partition("x")
    if width.isdigit() and height.isdigit() and len(width) < 6 and len(height) < 6:
        return int(width) * int(height)
    return _DEFAULT_IMAGE_PIXELS + 1


def _shown(value: Any) -> str:
    return repr(value)[:40] if isinstance(value, str) else f"of type {type(value).__name__}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
