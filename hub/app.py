"""create_app(): the middleware stack in front of the proxy, with its lifespan."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.catalog import offered_model
from hub.cors import SDK_HEADERS, JsonCORSMiddleware
from hub.limits_redis import RedisLimiter
from hub.metrics import Metrics
from hub.outbox.dispatcher import Dispatcher
from hub.providers.registry import ProviderRegistry
from hub.proxy import Proxy
from hub.routes import (
    FORMAT_PATHS,
    MODEL_ROUTE_TABLE,
    PUBLIC_PATHS,
    build_router,
    error_format_of,
    knows,
)
from hub.secrets import load_box
from hub.settings import LOG_FORMAT, Settings, check_shared_limits, load_settings
from hub.store import SqlStore
from hub.store.credentials import Credentials
from hub.store.instances import Instances
from hub.store.outbox import OutboxStore
from hub.transport import AiohttpTransport
from middleware import (
    AuthMiddleware,
    BillingMiddleware,
    CallMiddleware,
    CreditCheckMiddleware,
    ModelCallMiddleware,
)
from middleware.auth import QUERY_KEY_FILTER
from middleware.billing import charge_of
from middleware.call import Call, get_call
from middleware.errors import answer_unhandled, refuse_websocket, request_id_of
from middleware.limiter_memory import MemoryLimiter
from middleware.limits import RateLimitMiddleware
from middleware.routing import ROUTE_KEY, RouteMiddleware

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger("aigne_hub")

STORED_KEYS_RELOAD_SECONDS = 30.0


class HubApp:
    """The hub as one ASGI app: lifespan opens the store and the upstream client."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: SqlStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        check_shared_limits(settings)
        limits = settings.limits
        self.settings = settings
        self.store = store or SqlStore(
            settings.database_url,
            balance_cache_seconds=limits.balance_cache_seconds,
            rate_cache_seconds=limits.rate_cache_seconds,
            welcome_credits=settings.payments.welcome_credits,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        timeout = {
            "connect": limits.upstream_connect_timeout,
            "read": limits.upstream_read_timeout,
            "write": limits.upstream_read_timeout,
            "pool": limits.upstream_connect_timeout,
        }
        self.registry = ProviderRegistry(settings.providers, timeout)
        self.metrics = Metrics(
            log_prompts=settings.log_prompts,
            known_model=offered_model(self.store, self.registry),
            shared_dir=settings.metrics_dir,
        )
        # No AsyncClient: its cookie jar, redirects and auth are behaviour a proxy must not
        # have. The transport is the connection pool, shared by every request.
        self.transport = transport or AiohttpTransport(
            max_connections=limits.upstream_max_connections,
            idle_seconds=limits.upstream_idle_seconds,
            on_stale_retry=self.metrics.upstream_retried,
        )
        proxy = Proxy(
            self.registry,
            self.transport,
            self._price if settings.billing else None,
            client_send_timeout=limits.client_send_timeout,
        )
        router = build_router(self.store, self.registry, settings, self.metrics)

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            if ROUTE_KEY in scope:  # a model route (RouteMiddleware said so)
                await proxy(scope, receive, send)
            else:
                await router(scope, receive, send)

        billing = settings.billing
        stack: ASGIApp = BillingMiddleware(dispatch, enabled=billing)
        stack = ModelCallMiddleware(stack, log=self.store, observers=(self.metrics,))
        # Off (no endpoint configured): the SDK is never imported, no layer is added.
        self.tracer_provider: TracerProvider | None = None
        if settings.tracing.enabled:
            from hub.tracing.setup import traced, tracer_provider

            self.tracer_provider = tracer_provider(settings.tracing)
            base_urls = {name: p.base_url for name, p in settings.providers.items()}
            stack = traced(stack, self.tracer_provider, settings.tracing, base_urls)
        stack = CreditCheckMiddleware(
            stack,
            rates=self.store,
            enabled=billing,
            default_output_tokens=limits.hold_output_tokens,
            payment_link=settings.payments.payment_link,
        )
        redis = settings.redis
        self.limiter: RedisLimiter | MemoryLimiter = (
            RedisLimiter(
                redis.url,
                prefix=redis.prefix,
                timeout=redis.timeout,
                on_error=self.metrics.rate_limiter_failed,
            )
            if redis.url is not None
            else MemoryLimiter()
        )
        # Inside the Call layer (it needs the parsed call) and outside the credit check: a
        # call over a limit holds no credit and leaves no record.
        stack = RateLimitMiddleware(
            stack,
            limiter=self.limiter,
            policy=settings.rate_limits,
            overrides=self.store,
            default_output_tokens=limits.hold_output_tokens,
            fail_open=redis.on_error == "open",
            on_unavailable=self.metrics.rate_limiter_failed,
            on_refused=self.metrics.rate_limited,
        )
        stack = CallMiddleware(
            stack,
            routes=MODEL_ROUTE_TABLE,
            max_body_bytes=limits.max_body_bytes,
            models=self.registry,
        )
        self.auth = AuthMiddleware(
            stack,
            keys=self.store,
            accounts=self.store,
            session_secret=settings.session_secret,
            public_paths=PUBLIC_PATHS,
            cache_seconds=limits.key_cache_seconds,
            login_path="/login",
        )
        # Outside auth: an unknown path is a 404, not a request for a key; and every
        # layer's errors are written in the client format of the route.
        # Gemini clients may send their key as `?key=`: masked in the server's access log.
        logging.getLogger("uvicorn.access").addFilter(QUERY_KEY_FILTER)
        self.entry: ASGIApp = RouteMiddleware(
            self.auth, routes=MODEL_ROUTE_TABLE, known=knows(router), formats=FORMAT_PATHS
        )
        if settings.cors_origins:
            # Outermost, so a browser's preflight is answered before auth asks for a key.
            self.entry = JsonCORSMiddleware(
                self.entry,
                error_format_of=error_format_of,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=list(SDK_HEADERS),
                expose_headers=["x-request-id"],
            )
        self.instances = Instances(
            self.store, timeout=limits.instance_timeout, billing=settings.billing
        )
        # Every instance runs one; the one holding the lease delivers (hub.outbox).
        self.dispatcher = (
            Dispatcher(
                OutboxStore(self.store),
                settings.outbox,
                holder=lambda: self.instances.id,
                observer=self.metrics,
            )
            if settings.outbox.sinks
            else None
        )
        self.started = False
        self._reloader: asyncio.Task[None] | None = None

    async def load_stored_keys(self) -> None:
        """Provider keys kept in the database join their providers' pools; keys removed
        from it leave them (keys from the configuration stay)."""
        stored = await Credentials(self.store).sealed_credentials()
        opened: list[tuple[str, str, int, str]] = []
        if stored:
            settings = self.settings
            box = load_box(settings.encryption_key, settings.encryption_key_file)
            if box is None:
                raise RuntimeError(
                    "the database holds provider keys but no encryption key is configured: "
                    "set AIGNE_HUB_ENCRYPTION_KEY or security.encryption_key_file "
                    f"(looked for {settings.encryption_key_file})"
                )
            # Every key opened before any pool changes: a key that cannot be opened (the
            # encryption key was rotated and this hub has the old one) leaves the pools as
            # they were, rather than emptied.
            opened = [
                (row["provider"], box.open(row["sealed"]), int(row["weight"]), row["sealed"])
                for row in stored
            ]
        for adapter in self.registry.providers.values():
            adapter.pool.keep_only_configured_and(
                {row["sealed"] for row in stored if row["provider"] == adapter.name}
            )
        for provider_name, secret, weight, sealed in opened:
            provider = self.registry.providers.get(provider_name)
            if provider is None:
                logger.warning("a stored key is for provider '%s', not configured", provider_name)
                continue
            provider.pool.add(secret, weight, sealed)

    async def _reload_stored_keys(self) -> None:
        # `credentials add` and `remove` take effect without a restart, on every instance.
        while True:
            await asyncio.sleep(STORED_KEYS_RELOAD_SECONDS)
            try:
                await self.load_stored_keys()
            except Exception:
                logger.exception("reloading stored provider keys failed; keeping the old ones")

    async def _price(self, call: Call) -> int:
        """What a finished call costs, for answers that show it (the AIGNE format): at the
        rate the credit check put on the call, as billing charges it."""
        return charge_of(call)

    async def startup(self) -> None:
        self.metrics.start()
        await self.store.open()
        # Before any call is opened, so that every call carries this instance's id.
        await self.instances.start()
        settings = self.settings
        if settings.workers > 1 and settings.redis.url is None:
            keys, accounts = await self.store.limit_overrides()
            if keys or accounts:
                raise RuntimeError(
                    f"keys or accounts have rate limits and the hub runs {settings.workers} "
                    "workers without Redis: each would admit the whole limit. Set [redis] "
                    "url, or run one worker."
                )
        await self.load_stored_keys()
        if self.dispatcher is not None:
            await self.dispatcher.start()
        self._reloader = asyncio.get_running_loop().create_task(self._reload_stored_keys())
        self.started = True
        logger.info(
            "AIGNE Hub ready: mode=%s, providers=%s",
            self.settings.mode,
            ", ".join(self.registry.providers) or "none",
        )

    async def shutdown(self) -> None:
        if self.started:
            if self._reloader is not None:
                self._reloader.cancel()
            await self.transport.aclose()
            if self.dispatcher is not None:
                await self.dispatcher.stop()
            await self.instances.stop()
            if isinstance(self.limiter, RedisLimiter):
                await self.limiter.aclose()
            await self.store.close()
            self.metrics.stop()
            if self.tracer_provider is not None:
                # Sends the spans still batched, so the last calls' traces are not lost; in
                # a thread, as the exporter's HTTP request blocks.
                await asyncio.to_thread(self.tracer_provider.shutdown)
            self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self.entry(scope, receive, send)
            except Exception as exc:  # free until raised: nothing is wrapped per request
                call = get_call(scope)
                request_id = call.request_id if call is not None else request_id_of(scope)
                await answer_unhandled(scope, send, exc, request_id)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            # The hub serves no websocket: refused before any layer could mistake one for
            # an HTTP request (they carry no method, and answer with other messages).
            await refuse_websocket(
                scope, send, 403, "websocket_refused", "This hub serves no WebSocket routes."
            )
        # Any other kind of scope is a server's own extension: nothing here answers it.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(
    settings: Settings,
    *,
    store: SqlStore | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> HubApp:
    """The whole hub as an ASGI app; pass `transport` to route upstream calls elsewhere (tests)."""
    return HubApp(settings, store=store, transport=transport)


def from_environment() -> HubApp:
    """The app factory for any ASGI server, configured as `aigne-hub serve` is: the file
    named by AIGNE_HUB_CONFIG and the AIGNE_HUB_* variables. Each worker process calls it.

        uvicorn --factory hub.app:from_environment --workers 4
        gunicorn -k uvicorn_worker.UvicornWorker -w 4 'hub.app:from_environment()'
    """
    if not logging.getLogger().handlers:
        # As `serve` does: the hub's own lines (start-up, one per call) would otherwise go
        # nowhere under a server that configures only its own loggers.
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return create_app(load_settings())
