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

    def resolve(self, model: str) -> tuple[str, str] | None:
        # Split at the first '/': `openrouter/openai/gpt-4o` goes to openrouter as `openai/gpt-4o`.
        provider, sep, upstream = model.partition("/")
        if not sep or not upstream or provider not in self.providers:
            return None
        return provider, upstream

    def get(self, name: str) -> Adapter:
        return self.providers[name]

    def secrets(self) -> list[str]:
        """Every provider key, so error messages can be scrubbed of them."""
        return [key for p in self.providers.values() for key in p.secrets]
