"""What `aigne-hub serve` tells its operator at start: the providers that cannot serve a call
yet, and where to go next (the dashboard, the commands that make a key and set a rate)."""

from __future__ import annotations

import shlex
from collections.abc import Collection

from hub.settings import Settings, env_key_name
from hub.store import SqlStore
from hub.store.credentials import Credentials

# The person the printed commands make: a placeholder the operator replaces.
EXAMPLE_USER = "did:abt:you"
# What the printed `rates set` prices when no configured provider lists a model.
PRESET_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}


async def providers_with_stored_keys(store: SqlStore) -> set[str]:
    """The providers `aigne-hub credentials add` has stored a key for."""
    return {row["provider"] for row in await Credentials(store).list_credentials()}


def provider_warnings(settings: Settings, stored: Collection[str]) -> list[str]:
    """One line per configured provider without a key (in the configuration, the
    environment or the database), or one line when no provider is configured: without
    them the hub starts and then fails every call to that provider."""
    if not settings.providers:
        return [
            "no provider is configured, so every model call will be refused: add a "
            "[providers.NAME] table to the configuration, or export a provider's key "
            "(OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, ...) before `aigne-hub serve`"
        ]
    return [
        f"provider '{name}' has no API key (none in its [providers.{name}] table, "
        f"{env_key_name(name)} or the database): its calls go to {provider.base_url} without "
        "one, which a hosted provider refuses. Add api_keys to the table, export "
        f"{env_key_name(name)}, or run `aigne-hub credentials add {name}`"
        for name, provider in settings.providers.items()
        if not provider.api_keys and name not in stored
    ]


def next_steps(settings: Settings) -> str:
    """Where to go once the hub is up: the commands to run in another terminal, with the
    configuration that finds this hub's database, and the dashboard's address."""
    lines = ["Next, in another terminal:"]
    if settings.config_file is not None:
        lines.append(f"  export AIGNE_HUB_CONFIG={shlex.quote(settings.config_file)}")
    else:
        lines.append("  (from this folder, with this environment: no configuration file is used)")
    lines.append(
        f"  aigne-hub keys create --user {EXAMPLE_USER} --admin   # an API key, shown once"
    )
    if settings.billing:
        lines += [
            f"  aigne-hub credits grant {EXAMPLE_USER} 10",
            f"  aigne-hub rates set {_a_model(settings)} --input 0.15 --output 0.6 "
            "--per-million   # each model you sell needs a rate",
        ]
    lines += [
        f"  aigne-hub admin login-link --user {EXAMPLE_USER}   # sign in to the dashboard",
        f"Dashboard: {settings.public_address}/dashboard",
        f"OpenAI-compatible API: {settings.public_address}/v1",
    ]
    return "\n".join(lines)


def _a_model(settings: Settings) -> str:
    """A model this hub serves, for the example `rates set`."""
    for name, provider in settings.providers.items():
        if provider.models:
            return f"{name}/{provider.models[0]}"
    for name in settings.providers:
        if name in PRESET_MODELS:
            return f"{name}/{PRESET_MODELS[name]}"
    if settings.providers:
        return f"{next(iter(settings.providers))}/MODEL"
    return f"openai/{PRESET_MODELS['openai']}"
