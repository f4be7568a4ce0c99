"""What an operator hands the CLI and the admin API, read and checked once for both.

A rate (`aigne-hub rates set`, `PUT /api/admin/rates`) and a provider key (`aigne-hub
credentials add`, `POST /api/admin/credentials`) come in through two doors; each is
checked here, by one function, so the two cannot drift apart. The bounds are hub.bounds';
the store writes only what these return.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from hub import bounds
from hub.store.credentials import ProviderKey
from hub.store.rates import CALL_TYPES
from middleware.errors import HubError

RateEntry = tuple[str, str, dict[str, Any]]


def rate_entry(entry: Any) -> RateEntry:
    """One rate — {model, type, per: token|million, input, output, cached, cache_write,
    image} — as (model, call type, column values in integer units)."""
    return bounds.rate_entry(entry, CALL_TYPES)


def rate_entries(entries: Sequence[Any]) -> list[RateEntry]:
    """Several rates, each checked before any is written; an error names the entry."""
    checked = []
    for index, entry in enumerate(entries):
        try:
            checked.append(rate_entry(entry))
        except HubError as exc:
            raise HubError(exc.status, exc.code, f"Rate {index}: {exc.message}", exc.param) from exc
    return checked


def configured_provider(provider: Any, configured: Collection[str]) -> str:
    """A provider named as the configuration names it: 400 for text the store cannot hold,
    404 for a provider the configuration does not have."""
    name = bounds.text(provider, "provider", 100)
    if name not in configured:
        known = ", ".join(configured) or "none"
        message = f"No provider '{name}' is configured (configured: {known})."
        raise HubError(404, "not_found", message, "provider")
    return name


def provider_key(
    provider: Any,
    secret: Any,
    weight: Any,
    configured: Collection[str],
    *,
    key_name: str = "key",
    weight_name: str = "weight",
) -> ProviderKey:
    """A provider key as given, checked (the field names are the door's: `key` or `--key`):
    the key goes into an HTTP header of every call routed to it, the weight into an
    INTEGER column."""
    return ProviderKey(
        configured_provider(provider, configured),
        bounds.header_safe(secret, key_name),
        bounds.weight(weight, weight_name),
    )
