"""`[outbox]` and `[[outbox.sinks]]` in the TOML: where ledger rows are delivered, and how."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

Kind = Literal["webhook", "stripe"]
Mode = Literal["per_call", "summed"]
EVENT_KINDS = ("meter_event", "grant")
STRIPE_URL = "https://api.stripe.com"


@dataclass(frozen=True)
class SinkSettings:
    """One sink: a signed webhook, or Stripe billing meter events."""

    name: str
    kind: Kind
    # The webhook's address, or Stripe's base URL (a fake's in tests).
    url: str
    # `whsec_<base64>` for a webhook, `sk_...` for Stripe; never shown.
    secret: str = field(repr=False)
    mode: Mode = "per_call"
    # Summed mode: rows are summed per (account, kind, period of this many seconds).
    period_seconds: int = 300
    events: tuple[str, ...] = EVENT_KINDS
    # Stripe: the meter's event name.
    event_name: str = ""


@dataclass(frozen=True)
class OutboxSettings:
    sinks: tuple[SinkSettings, ...] = ()
    # How often the dispatcher looks for work when the last round found none.
    poll_seconds: float = 1.0
    # How long a dispatcher's lease lasts unless renewed (each round renews it).
    lease_seconds: float = 30.0
    # Rows (or reports) per sink per round, and deliveries in flight at once.
    batch: int = 200
    concurrency: int = 8
    # Seconds one delivery may take.
    timeout: float = 10.0
    # Retries wait base * 2**(attempts-1) seconds, at most max.
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    # Summed mode: a period is reported this long after it ends (settles in flight land).
    summed_grace_seconds: float = 10.0


_NUMBERS = {
    "poll_seconds": (0.01, 3600.0),
    "lease_seconds": (1.0, 3600.0),
    "batch": (1, 10_000),
    "concurrency": (1, 256),
    "timeout": (0.1, 300.0),
    "retry_base_seconds": (0.01, 3600.0),
    "retry_max_seconds": (0.01, 86_400.0),
    "summed_grace_seconds": (0.0, 3600.0),
}
_SINK_KEYS = {"name", "kind", "url", "base_url", "secret", "secret_env", "mode"}
_SINK_KEYS |= {"period_seconds", "events", "event_name"}


def _fail(key: str, problem: str) -> NoReturn:
    from hub.settings import ConfigError  # here: hub.settings imports this module

    raise ConfigError(key, problem)


def outbox_settings(table: Any, env: Mapping[str, str]) -> OutboxSettings:
    """Read and check `[outbox]`; raise ConfigError with the key at fault."""
    if table is None:
        return OutboxSettings()
    if not isinstance(table, dict):
        _fail("outbox", "must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "sinks":
            continue
        if key not in _NUMBERS:
            known = ", ".join(sorted({*_NUMBERS, "sinks"}))
            _fail(f"outbox.{key}", f"unknown setting (known: {known})")
        low, high = _NUMBERS[key]
        whole = isinstance(low, int)
        kind = int if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            _fail(f"outbox.{key}", f"must be a number from {low} to {high}, not {value!r}")
        values[key] = value if whole else float(value)
    settings = OutboxSettings(**values)
    if settings.lease_seconds < 2 * settings.timeout:
        _fail("outbox.lease_seconds", "must be at least twice outbox.timeout")
    sinks = table.get("sinks", [])
    if not isinstance(sinks, list):
        _fail("outbox.sinks", "must be an array of tables ([[outbox.sinks]])")
    parsed = tuple(_sink(entry, f"outbox.sinks[{i}]", env) for i, entry in enumerate(sinks))
    names = [s.name for s in parsed]
    if len(set(names)) != len(names):
        _fail("outbox.sinks", "each sink needs a name of its own")
    return OutboxSettings(**{**values, "sinks": parsed})


def _sink(entry: Any, where: str, env: Mapping[str, str]) -> SinkSettings:
    if not isinstance(entry, dict):
        _fail(where, "must be a table")
    for key in entry:
        if key not in _SINK_KEYS:
            _fail(f"{where}.{key}", f"unknown setting (known: {', '.join(sorted(_SINK_KEYS))})")
    kind = entry.get("kind")
    if kind not in ("webhook", "stripe"):
        _fail(f"{where}.kind", f'must be "webhook" or "stripe", not {kind!r}')
    name = entry.get("name", kind)
    if not isinstance(name, str) or not name or len(name) > 100:
        _fail(f"{where}.name", "must be a name of 1 to 100 characters")
    url = entry.get(
        "url" if kind == "webhook" else "base_url", None if kind == "webhook" else STRIPE_URL
    )
    url = _url(url, f"{where}.{'url' if kind == 'webhook' else 'base_url'}")
    mode = entry.get("mode", "per_call")
    if mode not in ("per_call", "summed"):
        _fail(f"{where}.mode", f'must be "per_call" or "summed", not {mode!r}')
    period = entry.get("period_seconds", 300)
    if isinstance(period, bool) or not isinstance(period, int) or not 1 <= period <= 86_400:
        _fail(f"{where}.period_seconds", f"must be whole seconds from 1 to 86400, not {period!r}")
    default_events = EVENT_KINDS if kind == "webhook" else ("meter_event",)
    events = entry.get("events", list(default_events))
    if not isinstance(events, list) or not events or any(e not in EVENT_KINDS for e in events):
        _fail(f"{where}.events", f"must be a list of {' and '.join(EVENT_KINDS)}")
    event_name = entry.get("event_name", "")
    if kind == "stripe" and (not isinstance(event_name, str) or not event_name):
        _fail(f"{where}.event_name", "is required: the event name of the Stripe meter")
    secret = _secret(entry, where, env)
    if kind == "webhook":
        webhook_key(secret, f"{where}.secret")
    elif not secret.startswith(("sk_", "rk_")):
        _fail(f"{where}.secret", "must be a Stripe secret or restricted key (sk_... or rk_...)")
    return SinkSettings(
        name=name,
        kind="stripe" if kind == "stripe" else "webhook",
        url=url,
        secret=secret,
        mode="summed" if mode == "summed" else "per_call",
        period_seconds=period,
        events=tuple(events),
        event_name=str(event_name),
    )


def _url(value: Any, key: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        _fail(key, f"must be an http:// or https:// address, not {value!r}")
    if not urlsplit(value).hostname:
        _fail(key, f"must name a host, not {value!r}")
    return value.rstrip("/")


def _secret(entry: dict[str, Any], where: str, env: Mapping[str, str]) -> str:
    """From the file (`secret`) or the environment (`secret_env` names the variable)."""
    name = entry.get("secret_env")
    if name is not None:
        if not isinstance(name, str) or not name:
            _fail(f"{where}.secret_env", "must name an environment variable")
        value = env.get(name)
        if not value:
            _fail(f"{where}.secret_env", f"the environment variable {name} is not set")
        return value
    value = entry.get("secret")
    if not isinstance(value, str) or not value:
        _fail(f"{where}.secret", "is required (or secret_env, naming an environment variable)")
    return value


def webhook_key(secret: str, key: str = "secret") -> bytes:
    """The HMAC key of a Standard Webhooks secret, `whsec_<base64>`."""
    if not secret.startswith("whsec_"):
        _fail(key, "must be a Standard Webhooks secret, whsec_<base64>")
    try:
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        _fail(key, "must be whsec_ followed by base64")
    if len(raw) < 16:
        _fail(key, "must hold at least 16 bytes (24 or more base64 characters)")
    return raw
