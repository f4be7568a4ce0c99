"""The models a hub offers: every priced model a provider serves, and those providers list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.providers.registry import ProviderRegistry
from hub.store.admin import Admin
from hub.store.sql import SqlStore
from middleware.scopes import ModelScope


async def listed_models(
    admin: Admin, registry: ProviderRegistry, scope: ModelScope | None = None
) -> list[dict[str, Any]]:
    """OpenAI `/v1/models` entries, sorted by id; with a key's `scope`, only those it may call."""
    seen: dict[str, dict[str, Any]] = {}
    for rate in await admin.list_rates():
        name = rate["model"]
        if registry.serves(name) and name not in seen:
            seen[name] = _entry(name, name.split("/", 1)[0])
    for provider in registry.providers.values():
        for model in provider.models:
            name = f"{provider.name}/{model}"
            seen.setdefault(name, _entry(name, provider.name))
    allowed = (e for e in seen.values() if scope is None or scope.allows(str(e["id"])))
    return sorted(allowed, key=lambda entry: str(entry["id"]))


def _entry(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


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
