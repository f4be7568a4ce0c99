"""Which provider serves a model name: `provider/model`, OpenRouter's nesting included."""

from __future__ import annotations

from collections.abc import Mapping

from hub.providers.openai import OpenAIProvider
from hub.settings import ProviderSettings


class ProviderRegistry:
    """The configured providers; also the ModelCatalog the Call middleware resolves with."""

    def __init__(
        self, providers: Mapping[str, ProviderSettings], timeout: dict[str, float]
    ) -> None:
        self.providers = {name: OpenAIProvider(p, timeout) for name, p in providers.items()}

    def resolve(self, model: str) -> tuple[str, str] | None:
        # Split at the first '/': `openrouter/openai/gpt-4o` goes to openrouter as `openai/gpt-4o`.
        provider, sep, upstream = model.partition("/")
        if not sep or not upstream or provider not in self.providers:
            return None
        return provider, upstream

    def get(self, name: str) -> OpenAIProvider:
        return self.providers[name]

    def secrets(self) -> list[str]:
        """Every provider key, so error messages can be scrubbed of them."""
        return [key for p in self.providers.values() for key in p.secrets]
