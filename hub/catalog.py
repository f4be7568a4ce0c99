"""The models a hub offers: every priced model a provider serves, and those providers list.

Each `/v1/models` entry says, besides OpenAI's fields, what a client needs to pick a model
(as OpenRouter's catalog does): its `type` (chat, embedding or image), its
`context_length` when the hub knows it (None otherwise), and its price in credits per
token (per image for `image`) as decimal strings, `pricing: {prompt, completion, image}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.providers.registry import ProviderRegistry
from hub.store.admin import Admin
from hub.store.sql import SqlStore
from middleware.money import credits_text
from middleware.scopes import ModelScope

_TYPES = {"chatCompletion": "chat", "embedding": "embedding", "imageGeneration": "image"}
# For an unpriced model a provider lists: its type guessed from its name.
_NAME_TYPES = (
    ("embed", "embedding"),
    ("dall-e", "image"),
    ("gpt-image", "image"),
    ("imagen", "image"),
)
# Context windows (tokens) the makers publish for well-known families, by the upstream
# name's start; the longest match wins. Others are listed with None: unknown, not zero.
CONTEXT_LENGTHS = {
    "gpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-5": 400_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "claude-": 200_000,
    "gemini-1.5": 1_048_576,
    "gemini-2": 1_048_576,
    "text-embedding-3": 8_191,
    "deepseek-": 128_000,
}


async def listed_models(
    admin: Admin, registry: ProviderRegistry, scope: ModelScope | None = None
) -> list[dict[str, Any]]:
    """OpenAI `/v1/models` entries, sorted by id; with a key's `scope`, only those it may call."""
    seen: dict[str, dict[str, Any]] = {}
    for rate in await admin.list_rates():
        name = rate["model"]
        if registry.serves(name) and name not in seen:
            seen[name] = {**_entry(name, name.split("/", 1)[0]), **_priced(rate)}
    for provider in registry.providers.values():
        for model in provider.models:
            name = f"{provider.name}/{model}"
            seen.setdefault(name, {**_entry(name, provider.name), **_unpriced(name)})
    allowed = (e for e in seen.values() if scope is None or scope.allows(str(e["id"])))
    return sorted(allowed, key=lambda entry: str(entry["id"]))


def _entry(name: str, owner: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": owner,
        "context_length": context_length(name),
    }


def _priced(rate: dict[str, Any]) -> dict[str, Any]:
    kind = _TYPES.get(str(rate["type"]), str(rate["type"]))
    image = rate.get("image_rate")
    pricing = {
        "prompt": credits_text(int(rate["input_rate"])),
        "completion": credits_text(int(rate["output_rate"])),
        "image": credits_text(int(image)) if image is not None else "0",
    }
    return {"type": kind, "pricing": pricing}


def _unpriced(name: str) -> dict[str, Any]:
    lowered = name.lower()
    kind = next((k for word, k in _NAME_TYPES if word in lowered), "chat")
    return {"type": kind, "pricing": None}


def context_length(name: str) -> int | None:
    """The known context window of a `provider/model` name, else None."""
    model = name.split("/", 1)[-1].lower()
    model = model.rsplit("/", 1)[-1]  # openrouter/openai/gpt-4o: the maker's own name
    found = [prefix for prefix in CONTEXT_LENGTHS if model.startswith(prefix)]
    return CONTEXT_LENGTHS[max(found, key=len)] if found else None


def offered_model(store: SqlStore, registry: ProviderRegistry) -> Callable[[str], bool]:
    """Whether a model name is one the hub offers: priced (in the store's rate cache) or
    listed by a provider, with or without its `provider/` prefix. No database read."""
    listed = frozenset(
        name
        for provider in registry.providers.values()
        for model in provider.models
        for name in (model, f"{provider.name}/{model}")
    )
    return lambda model: model in listed or store.priced(model)
