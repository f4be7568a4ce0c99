"""Each provider as its operator sees it: where it is, its keys (masked) and how they fare
in this process's pool, its last hour of calls, and one word for its health."""

from __future__ import annotations

import math
import time
from typing import Any

from hub.analytics import Window, usage
from hub.providers.registry import ProviderRegistry
from hub.settings import Settings
from hub.store.sql import SqlStore


async def provider_report(
    registry: ProviderRegistry, settings: Settings, store: SqlStore
) -> list[dict[str, Any]]:
    hour = Window(since=time.time() - 3600)
    last_hour = {e["provider"]: e for e in await usage(store, hour, None, "provider")}
    now = time.monotonic()  # the pool keeps its cool-downs on this clock
    report = []
    for name, adapter in registry.providers.items():
        configured = settings.providers[name]
        credentials = [
            {
                "masked": c.masked,
                "weight": c.weight,
                "from": "database" if c.stored_as is not None else "config",
                "state": _state(c.disabled_until, c.cooled_until, now),
            }
            for c in adapter.pool.credentials
        ]
        figures = last_hour.get(name)
        report.append(
            {
                "name": name,
                "kind": configured.kind,
                "base_url": configured.base_url,
                "models": list(configured.models),
                "credentials": credentials,
                "last_hour": figures,
                "health": _health(figures, credentials),
            }
        )
    return report


def _state(disabled_until: float, cooled_until: float, now: float) -> str:
    if disabled_until == math.inf:
        return "out of service: the key cannot be sent (a control character in it)"
    if disabled_until > now:
        return f"refused, retried in {disabled_until - now:.0f} s"
    if cooled_until > now:
        return f"cooling down for {cooled_until - now:.0f} s"
    return "ok"


def _health(figures: dict[str, Any] | None, credentials: list[dict[str, Any]]) -> str:
    """down: no usable key, or most of (3+) calls failing; degraded: a key resting or 5% of
    calls failing; healthy: calls and no trouble; idle: no calls this hour."""
    usable = [c for c in credentials if not c["state"].startswith("refused")]
    if not usable or (figures and figures["calls"] >= 3 and figures["error_rate"] >= 0.5):
        return "down"
    if any(c["state"] != "ok" for c in credentials) or (figures and figures["error_rate"] >= 0.05):
        return "degraded"
    return "healthy" if figures else "idle"
