"""Which provider serves a model name: `provider/model`, OpenRouter's nesting included."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hub.providers.anthropic import AnthropicProvider
from hub.providers.base import Adapter
from hub.providers.gemini import GeminiProvider
from hub.providers.openai import OpenAIProvider
from hub.settings import ProviderSettings

ADAPTERS: dict[str, Callable[[ProviderSettings, dict[str, float]], Adapter]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
}


class ProviderRegistry:
    """The configured providers; also the ModelCatalog the Call middleware resolves with."""

    def __init__(
        self, providers: Mapping[str, ProviderSettings], timeout: dict[str, float]
    ) -> None:
        self.providers: dict[str, Adapter] = {
            name: ADAPTERS[p.kind](p, timeout) for name, p in providers.items()
        }
        # Model name -> the providers that list it, for names given without a prefix.
        self._serving: dict[str, list[str]] = {}
        for name, settings in providers.items():
            for model in settings.models:
                self._serving.setdefault(model, []).append(name)
        self._turns: dict[str, int] = {}

    def resolve(self, model: str) -> tuple[str, str] | None:
        """(provider, upstream model) for a model name, or None if no provider serves it.

        `provider/model` names its provider (split at the first '/': `openrouter/openai/
        gpt-4o` goes to openrouter as `openai/gpt-4o`). A name without a known provider
        prefix goes to the providers that list it in their `models`, in rotation.
        """
        provider, sep, upstream = model.partition("/")
        if sep and upstream and provider in self.providers:
            return provider, upstream
        serving = self._serving.get(model)
        if not serving:
            return None
        turn = self._turns.get(model, 0)
        self._turns[model] = turn + 1
        return serving[turn % len(serving)], model

    def serves(self, model: str) -> bool:
        """Whether some provider serves this name (without advancing any rotation)."""
        provider, sep, upstream = model.partition("/")
        return bool(sep and upstream and provider in self.providers) or model in self._serving

    def route(self, model: str, first: str | None) -> list[Adapter]:
        """The providers to try for a call, in order: `first` (as resolved), then, for a
        name without a provider prefix, every other provider that serves it."""
        chosen = [self.providers[first]] if first in self.providers else []
        if self._serving.get(model) and model.partition("/")[0] not in self.providers:
            chosen += [self.providers[p] for p in self._serving[model] if p != first]
        return chosen

    def get(self, name: str) -> Adapter:
        return self.providers[name]

    def secrets(self) -> list[str]:
        """Every provider key, so error messages can be scrubbed of them."""
        return [c.secret for p in self.providers.values() for c in p.pool.credentials if c.secret]
