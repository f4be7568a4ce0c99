"""Settings: a TOML file (`--config` / AIGNE_HUB_CONFIG) with environment overrides for secrets."""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from hub import bounds
from hub.outbox.config import OutboxSettings, outbox_settings
from hub.payments.settings import KEYS as PAYMENT_KEYS
from hub.payments.settings import PaymentSettings, read_payments
from hub.tracing import KEYS as TRACING_KEYS
from hub.tracing import TracingSettings, read_tracing
from middleware.errors import HubError
from middleware.limits import LimitPolicy
from middleware.ports import Quota

Mode = Literal["service-provider", "self-hosted"]

# Known providers: their protocol ("kind") and where they live. A provider named like one
# of these needs no kind or base_url; its key comes from <NAME>_API_KEY when the file has
# none, and its presence in the environment switches the provider on.
PRESETS: dict[str, tuple[str, str]] = {
    "openai": ("openai", "https://api.openai.com/v1"),
    "deepseek": ("openai", "https://api.deepseek.com/v1"),
    "xai": ("openai", "https://api.x.ai/v1"),
    "openrouter": ("openai", "https://openrouter.ai/api/v1"),
    "groq": ("openai", "https://api.groq.com/openai/v1"),
    "mistral": ("openai", "https://api.mistral.ai/v1"),
    "ollama": ("openai", "http://127.0.0.1:11434/v1"),
    "anthropic": ("anthropic", "https://api.anthropic.com"),
    "google": ("gemini", "https://generativelanguage.googleapis.com"),
}
# Other names their keys go by in the environment.
_ENV_ALIASES = {"google": ("GEMINI_API_KEY",)}
SUPPORTED_KINDS = ("openai", "anthropic", "gemini")


class ConfigError(ValueError):
    """A bad setting: says which key and what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"configuration error at '{key}': {problem}")
        self.key = key


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    kind: str
    base_url: str
    api_keys: tuple[str, ...]
    models: tuple[str, ...] = ()
    # One per key, for the weighted pool; empty means 100 each.
    weights: tuple[int, ...] = ()
    # Request fields this provider cannot take: dropped (and logged by name) when True,
    # refused with 400 `unsupported_parameter` when False.
    drop_unsupported: bool = False
    # Whether an OpenAI-kind provider serves the Responses API (POST /responses), so
    # Responses clients pass through to it; None: only OpenAI's own address does (DeepSeek,
    # Groq, Ollama... serve chat completions only, and get Responses calls translated).
    responses_api: bool | None = None

    def serves_responses(self) -> bool:
        if self.responses_api is not None:
            return self.kind == "openai" and self.responses_api
        return self.kind == "openai" and self.base_url.startswith("https://api.openai.com/")

    def key_weights(self) -> tuple[int, ...]:
        return self.weights or (DEFAULT_WEIGHT,) * len(self.api_keys)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 120.0
    upstream_max_connections: int = 1000
    # Seconds an upstream connection may sit unused in the pool and still be reused: below
    # the providers' keep-alive timeouts (uvicorn's and Node's 5 s), so the hub stops using a
    # connection before the provider closes it.
    upstream_idle_seconds: float = 4.0
    key_cache_seconds: float = 5.0
    balance_cache_seconds: float = 1.0
    rate_cache_seconds: float = 5.0
    # Output tokens assumed for a call's credit hold when it sets no max_tokens.
    hold_output_tokens: int = 4096
    # Seconds a piece of an answer may wait for the client to read it before the call is
    # ended (client_too_slow): the upstream connection and credit hold are not kept forever.
    client_send_timeout: float = 60.0
    # Seconds a hub process may go without its heartbeat before another takes it for dead
    # and settles its calls in flight (`failed`/`hub_crashed`, charged for their prompt).
    instance_timeout: float = 30.0


@dataclass(frozen=True)
class RedisSettings:
    """`[redis]`: shared rate-limit counters for several workers and hosts."""

    url: str | None = None
    # When Redis cannot be reached: admit calls without limits ("open") or refuse them
    # ("closed"). Either way it is logged and counted, never a 500.
    on_error: Literal["open", "closed"] = "open"
    # Prefix of every key the hub writes, so several hubs can share one Redis.
    prefix: str = "aigne-hub"
    # Seconds to wait for Redis before failing open or closed.
    timeout: float = 0.5


@dataclass(frozen=True)
class Settings:
    mode: Mode = "service-provider"
    database_url: str = "sqlite:///aigne-hub.db"
    host: str = "127.0.0.1"
    port: int = 8090
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    sqlite_synchronous: str = "FULL"
    # Browser origins allowed to call the API directly (chat UIs); empty: no CORS headers.
    cors_origins: tuple[str, ...] = ()
    # The address people and SDKs reach the hub at (`https://hub.example`), for discovery
    # documents and printed links; never taken from a request's Host header. None: the
    # address `serve` listens on (see `public_address`).
    public_url: str | None = None
    # Proxies (IPs or networks, or "*") whose X-Forwarded-Proto/For `serve` believes, so a
    # hub behind a TLS-ending proxy knows its visitors use https. Empty: none.
    forwarded_allow_ips: tuple[str, ...] = ()
    # Encrypts provider keys stored in the database; the key file is made on first use.
    encryption_key: str | None = None
    encryption_key_file: str = "aigne-hub.key"
    # Whether the per-call log line carries the prompt (off: people's text stays out of logs).
    log_prompts: bool = False
    # Worker processes `serve` runs (`[server] workers`, a number or "auto": one per core).
    workers: int = 1
    # Where the worker processes of one server keep their metrics, summed at each scrape
    # (AIGNE_HUB_METRICS_DIR); None: each process counts alone. `serve --workers N` sets it.
    metrics_dir: str | None = None
    # The file these settings were read from (an absolute path), for messages that tell
    # people how to reach the same hub; None: defaults and the environment only.
    config_file: str | None = None
    # `[rate_limits]`: requests and tokens per minute and calls at once, per scope.
    rate_limits: LimitPolicy = field(default_factory=LimitPolicy)
    redis: RedisSettings = field(default_factory=RedisSettings)
    # `[billing]`: the payment link in 402 answers, welcome credits, payment webhooks.
    payments: PaymentSettings = field(default_factory=PaymentSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @property
    def billing(self) -> bool:
        return self.mode == "service-provider"

    @property
    def public_address(self) -> str:
        """The hub's address without a trailing slash: `public_url`, else where it listens
        (a wildcard host shown as loopback, the one address sure to reach it)."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


_TOP = {
    "mode",
    "server",
    "database",
    "limits",
    "rate_limits",
    "redis",
    "providers",
    "session",
    "security",
    "logging",
    "billing",
    "outbox",
    "tracing",
}


# How the hub's log lines look, under `serve` and under any server loading the factory.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any) and apply environment overrides; raise ConfigError if bad."""
    env = os.environ if env is None else env
    path = path or env.get("AIGNE_HUB_CONFIG") or None
    data: dict[str, Any] = {}
    # Relative paths in the file (and the default ones) are taken from the file's folder,
    # so `serve` and every CLI command given the same file find the same database and key
    # file, wherever they are run from.
    folder = Path(os.path.abspath(path)).parent if path is not None else None
    if path is not None:
        # The file may be named by --config or by AIGNE_HUB_CONFIG, and a relative name is
        # read from the working folder: say both, and where it was looked for.
        where = "--config/AIGNE_HUB_CONFIG"
        try:
            data = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
        except FileNotFoundError as exc:
            looked = os.path.abspath(path)
            raise ConfigError(where, f"no such file: {path} (looked for {looked})") from exc
        except OSError as exc:
            raise ConfigError(where, f"cannot read {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(where, f"{path} is not UTF-8 text: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(where, f"{path} is not valid TOML: {exc}") from exc
    _no_unknown(data, _TOP, "")
    server = _table(
        data,
        "server",
        {"host", "port", "cors_origins", "public_url", "forwarded_allow_ips", "workers"},
    )
    cors = server.get("cors_origins", [])
    if not isinstance(cors, list) or not all(isinstance(o, str) for o in cors):
        raise ConfigError("server.cors_origins", 'must be a list of origins, e.g. ["*"]')
    database = _table(data, "database", {"url", "sqlite_synchronous"})
    session = _table(data, "session", {"secret"})
    security = _table(data, "security", {"encryption_key", "encryption_key_file"})
    log_prompts = _table(data, "logging", {"prompts"}).get("prompts", False)
    if not isinstance(log_prompts, bool):
        raise ConfigError("logging.prompts", f"must be true or false, not {log_prompts!r}")

    mode = env.get("AIGNE_HUB_MODE") or data.get("mode", "service-provider")
    if mode not in ("service-provider", "self-hosted"):
        raise ConfigError("mode", f"must be 'service-provider' or 'self-hosted', not {mode!r}")

    port = env.get("AIGNE_HUB_PORT") or server.get("port", 8090)
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool):
        raise ConfigError("server.port", f"must be a whole number, not {port!r}")
    if not 0 < port < 65536:
        raise ConfigError("server.port", f"must be between 1 and 65535, not {port}")

    url = env.get("AIGNE_HUB_DATABASE_URL")  # from the environment: as given (the cwd's)
    if not url:
        url = database.get("url", "sqlite:///aigne-hub.db")
        if not isinstance(url, str):
            raise ConfigError("database.url", f"must be a string, not {url!r}")
        url = sqlite_url_from(url, folder)
    if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(
            "database.url", f"must start with sqlite:// or postgresql://, not {url!r}"
        )
    synchronous = str(database.get("sqlite_synchronous", "FULL")).upper()
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ConfigError("database.sqlite_synchronous", "must be FULL, NORMAL or EXTRA")

    secret = env.get("AIGNE_HUB_SESSION_SECRET") or session.get("secret")
    return Settings(
        mode="self-hosted" if mode == "self-hosted" else "service-provider",
        database_url=url,
        host=env.get("AIGNE_HUB_HOST") or str(server.get("host", "127.0.0.1")),
        port=port,
        providers=_providers(data.get("providers", {}), env),
        limits=_limits(_table(data, "limits", set(Limits.__dataclass_fields__))),
        session_secret=str(secret) if secret else secrets.token_urlsafe(32),
        sqlite_synchronous=synchronous,
        cors_origins=tuple(cors),
        public_url=_public_url(env.get("AIGNE_HUB_PUBLIC_URL") or server.get("public_url")),
        forwarded_allow_ips=trusted_proxies(server.get("forwarded_allow_ips", [])),
        encryption_key=env.get("AIGNE_HUB_ENCRYPTION_KEY") or security.get("encryption_key"),
        encryption_key_file=_path_from(
            str(security.get("encryption_key_file", "aigne-hub.key")), folder
        ),
        log_prompts=log_prompts,
        workers=worker_count(env.get("AIGNE_HUB_WORKERS") or server.get("workers", 1)),
        metrics_dir=env.get("AIGNE_HUB_METRICS_DIR") or None,
        config_file=os.path.abspath(path) if path is not None else None,
        rate_limits=_rate_limits(_table(data, "rate_limits", {*_SCOPES, "models"})),
        redis=_redis(_table(data, "redis", {"url", "on_error", "prefix", "timeout"}), env),
        payments=read_payments(_table(data, "billing", PAYMENT_KEYS), env, ConfigError),
        outbox=outbox_settings(data.get("outbox"), env),
        tracing=read_tracing(_table(data, "tracing", TRACING_KEYS), env, ConfigError),
    )


def sqlite_url_from(url: str, folder: Path | None) -> str:
    """A `sqlite:///` URL whose relative file path is taken from `folder` (the config
    file's); other URLs, absolute paths and in-memory databases as they are."""
    prefix = "sqlite:///"
    if folder is None or not url.startswith(prefix):
        return url
    path, sep, query = url[len(prefix) :].partition("?")
    if not path or path == ":memory:":
        return url
    return f"{prefix}{_path_from(path, folder)}{sep}{query}"


def sqlite_path(url: str) -> Path | None:
    """The file a `sqlite:///` URL names (None for other databases and in-memory ones)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :].partition("?")[0]
    return None if not path or path == ":memory:" else Path(path)


def _path_from(path: str, folder: Path | None) -> str:
    if folder is None or os.path.isabs(path):
        return path
    return os.path.normpath(folder / path)


_SCOPES = ("key", "account", "app", "model")
_QUOTA_FIELDS = ("rpm", "tpm", "concurrent")


def _quota(table: Any, where: str, lowest: int = 1) -> Quota:
    if not isinstance(table, dict):
        raise ConfigError(where, "must be a table like { rpm = 60, tpm = 100000, concurrent = 4 }")
    _no_unknown(table, set(_QUOTA_FIELDS), where + ".")
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= 2**62:
            kind = "a positive whole number" if lowest else "a whole number (0: no limit)"
            raise ConfigError(f"{where}.{name}", f"must be {kind}, not {value!r}")
    return Quota(table.get("rpm"), table.get("tpm"), table.get("concurrent"))


def _rate_limits(table: dict[str, Any]) -> LimitPolicy:
    """`[rate_limits]`: a quota per kind of scope (`key`, `account`, `app`, and `model` for
    each model alone), and `models."provider/name"` for a model's own."""
    quotas = {scope: _quota(table.get(scope, {}), f"rate_limits.{scope}") for scope in _SCOPES}
    models = table.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError("rate_limits.models", "must be a table of model names")
    per_model = {
        # A model's own quota replaces `model` field by field: 0 lifts a limit there.
        str(name): _quota(entry, f"rate_limits.models.{name}", lowest=0)
        for name, entry in models.items()
    }
    return LimitPolicy(**quotas, models=per_model)


def _redis(table: dict[str, Any], env: Mapping[str, str]) -> RedisSettings:
    url = env.get("AIGNE_HUB_REDIS_URL") or table.get("url") or None
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://"))
    ):
        raise ConfigError("redis.url", "must start with redis://, rediss:// or unix://")
    on_error = table.get("on_error", "open")
    if on_error not in ("open", "closed"):
        raise ConfigError("redis.on_error", f'must be "open" or "closed", not {on_error!r}')
    prefix = table.get("prefix", "aigne-hub")
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError("redis.prefix", "must be a non-empty string")
    timeout = table.get("timeout", 0.5)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 60:
        raise ConfigError("redis.timeout", f"must be seconds between 0 and 60, not {timeout!r}")
    return RedisSettings(
        url=url,
        on_error="closed" if on_error == "closed" else "open",
        prefix=prefix,
        timeout=float(timeout),
    )


def check_shared_limits(settings: Settings) -> None:
    """Refuse rate limits that several worker processes would each count alone: without
    Redis, every worker would admit the whole limit."""
    if settings.workers > 1 and settings.rate_limits and settings.redis.url is None:
        raise ConfigError(
            "redis.url",
            f"rate limits are configured and the hub runs {settings.workers} workers: each "
            "would count its calls alone and admit the whole limit. Set [redis] url (the "
            "workers then share their counters), or run one worker.",
        )


def public_url(value: Any, key: str = "server.public_url") -> str:
    """An http(s) origin, optionally with a path prefix, without a trailing slash."""
    problem = f"must be an http:// or https:// address like https://hub.example, not {value!r}"
    if not isinstance(value, str) or any(c in value for c in "\r\n\t\0 ?#"):
        raise ConfigError(key, problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(key, problem) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise ConfigError(key, problem)
    return value.rstrip("/")


def worker_count(value: Any, key: str = "server.workers") -> int:
    """A number of worker processes: a whole number from 1, or "auto" for one per core this
    process may run on."""
    if value == "auto":
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
        return len(cores) or os.cpu_count() or 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f'must be a whole number from 1, or "auto", not {value!r}')
    return value


def _public_url(value: Any) -> str | None:
    return None if value is None or value == "" else public_url(value)


def trusted_proxies(value: Any, key: str = "server.forwarded_allow_ips") -> tuple[str, ...]:
    """Proxies whose forwarded headers are believed: "*", IP addresses or networks, as a
    list or one comma-separated string (as uvicorn reads them)."""
    entries = value.split(",") if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(key, 'must be a list like ["10.0.0.1", "10.1.0.0/16"]')
    trusted = tuple(e.strip() for e in entries if e.strip())
    for entry in trusted:
        if entry != "*":
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ConfigError(key, f"{entry!r} is not an IP address or network") from exc
    return trusted


def _table(data: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(name, "must be a table")
    _no_unknown(table, allowed, name + ".")
    return table


def _no_unknown(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                prefix + key, f"unknown setting (known: {', '.join(sorted(allowed))})"
            )


def _limits(table: dict[str, Any]) -> Limits:
    values: dict[str, Any] = {}
    defaults = Limits()
    for key, value in table.items():
        whole = isinstance(getattr(defaults, key), int)
        kind = "a positive whole number" if whole else "a positive number"
        number = isinstance(value, int if whole else int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0:  # TOML allows nan and inf
            raise ConfigError(f"limits.{key}", f"must be {kind}, not {value!r}")
        values[key] = value if whole else float(value)
    return Limits(**values)


def _providers(table: Any, env: Mapping[str, str]) -> dict[str, ProviderSettings]:
    if not isinstance(table, dict):
        raise ConfigError("providers", "must be a table of providers")
    providers: dict[str, ProviderSettings] = {}
    for name, entry in table.items():
        key = f"providers.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(key, "must be a table")
        known = {"kind", "base_url", "api_keys", "api_key", "models", "drop_unsupported"}
        _no_unknown(entry, {*known, "responses_api"}, key + ".")
        if "/" in name or not name:
            raise ConfigError(key, "a provider name may not be empty or contain '/'")
        preset_kind, preset_url = PRESETS.get(name, ("openai", ""))
        kind = entry.get("kind", preset_kind)
        if kind not in SUPPORTED_KINDS:
            raise ConfigError(
                key + ".kind",
                f"{kind!r} is not supported yet (supported: {', '.join(SUPPORTED_KINDS)})",
            )
        base_url = entry.get("base_url") or preset_url
        if not base_url:
            raise ConfigError(key + ".base_url", "required for a provider that is not a preset")
        if not str(base_url).startswith(("http://", "https://")):
            raise ConfigError(key + ".base_url", f"must be an http(s) URL, not {base_url!r}")
        if "api_key" in entry:
            if not isinstance(entry["api_key"], str) or not entry["api_key"]:
                raise ConfigError(key + ".api_key", "must be a non-empty string")
            _check_key(entry["api_key"], key + ".api_key")
            keys = [entry["api_key"]]
        else:
            keys = entry.get("api_keys") or []
        if not keys and _env_key(name, env):
            keys = [_env_key(name, env)]
        keys, weights = _weighted_keys(keys, key + ".api_keys")
        models = entry.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ConfigError(key + ".models", "must be a list of model names")
        drop = entry.get("drop_unsupported", False)
        if not isinstance(drop, bool):
            raise ConfigError(key + ".drop_unsupported", f"must be true or false, not {drop!r}")
        responses_api = entry.get("responses_api")
        if responses_api is not None and not isinstance(responses_api, bool):
            raise ConfigError(key + ".responses_api", "must be true or false")
        providers[name] = ProviderSettings(
            name=name,
            kind=kind,
            base_url=str(base_url).rstrip("/"),
            api_keys=tuple(keys),
            models=tuple(models),
            weights=tuple(weights),
            drop_unsupported=drop,
            responses_api=responses_api,
        )
    # Presets switch themselves on when their key is in the environment.
    for name, (kind, base_url) in PRESETS.items():
        env_key = _env_key(name, env)
        if name not in providers and env_key:
            providers[name] = ProviderSettings(name, kind, base_url, (env_key,))
    return providers


DEFAULT_WEIGHT = 100


def _weighted_keys(entries: Any, where: str) -> tuple[list[str], list[int]]:
    """`["sk-1", {key = "sk-2", weight = 50}]` as keys and their weights."""
    problem = 'must be a list of keys, each a string or {key = "...", weight = N}'
    if not isinstance(entries, list):
        raise ConfigError(where, problem)
    keys: list[str] = []
    weights: list[int] = []
    for entry in entries:
        if isinstance(entry, str) and entry:
            keys.append(entry)
            weights.append(DEFAULT_WEIGHT)
        elif isinstance(entry, dict) and isinstance(entry.get("key"), str) and entry["key"]:
            weight = entry.get("weight", DEFAULT_WEIGHT)
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int)
                or not 0 < weight <= bounds.MAX_WEIGHT
            ):
                raise ConfigError(
                    where,
                    f"a weight must be a positive whole number (at most {bounds.MAX_WEIGHT}), "
                    f"not {weight!r}",
                )
            if set(entry) - {"key", "weight"}:
                raise ConfigError(where, problem)
            keys.append(entry["key"])
            weights.append(weight)
        else:
            raise ConfigError(where, problem)
    for secret in keys:
        _check_key(secret, where)
    return keys, weights


def _check_key(secret: str, where: str) -> None:
    """A provider key goes into a header of every call: refused here, at load, if it could
    not (a line break pasted with it), by the rule the admin API and CLI apply."""
    try:
        bounds.header_safe(secret, "key")
    except HubError as exc:
        # The message names the rule, never the key.
        raise ConfigError(where, exc.message.replace("'key'", "a provider key")) from None


def env_key_name(provider: str) -> str:
    """The environment variable a provider's key may come from: OPENAI_API_KEY for openai."""
    return provider.upper().replace("-", "_") + "_API_KEY"


def _env_key(name: str, env: Mapping[str, str]) -> str:
    for variable in (env_key_name(name), *_ENV_ALIASES.get(name, ())):
        if env.get(variable):
            _check_key(env[variable], variable)
            return env[variable]
    return ""
