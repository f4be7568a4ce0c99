"""URL → handler: the model routes go through the proxy, the rest through a small router."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Router
from starlette.types import Receive, Scope, Send

from hub import admin_api, budget_api, dashboard, login, usage_api
from hub.catalog import listed_models
from hub.dialects import aigne, aigne_models
from hub.dialects.aigne import AIGNE
from hub.dialects.anthropic_messages import ANTHROPIC_MESSAGES
from hub.dialects.anthropic_messages_count import CountTokens
from hub.dialects.gemini import GEMINI
from hub.dialects.gemini_count import GeminiCountTokens
from hub.dialects.openai_chat import OPENAI_CHAT
from hub.dialects.responses import RESPONSES
from hub.json_route import JsonRoute, JsonRouter
from hub.metrics import Metrics
from hub.openapi import OPENAPI_PATH, openapi_route
from hub.page_headers import SecurityHeaders
from hub.payments import routes as payments
from hub.providers.registry import ProviderRegistry
from hub.settings import Settings
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.payments import Payments
from middleware.auth import session_signer
from middleware.call import CallType, get_identity
from middleware.errors import ErrorRenderer, HubError, send_error
from middleware.routing import Route, RouteTable


def _openai(call_type: CallType) -> Route:
    return Route(call_type, OPENAI_CHAT)


# Path -> (call type, client format). A new client format is its module in hub/dialects/
# plus its lines here; a `{model}` part in a path takes the model from the path.
# Both the AIGNE Hub paths and the OpenAI SDK's paths; `/v1/image/...` as the issue names it.
MODEL_ROUTES: dict[str, Route] = {
    # The AIGNE SDK's own format.
    "/api/v2/chat": Route("chatCompletion", AIGNE),
    "/api/v2/image": Route("imageGeneration", AIGNE),
    "/v1/chat/completions": _openai("chatCompletion"),
    # The Responses API (the openai SDKs' client.responses, Codex).
    "/v1/responses": Route("chatCompletion", RESPONSES),
    # Anthropic Messages: the anthropic SDKs, Claude Code (ANTHROPIC_BASE_URL=<hub>).
    "/v1/messages": Route("chatCompletion", ANTHROPIC_MESSAGES),
    "/api/v2/chat/completions": _openai("chatCompletion"),
    "/v1/embeddings": _openai("embedding"),
    "/api/v2/embeddings": _openai("embedding"),
    "/v1/images/generations": _openai("imageGeneration"),
    "/v1/image/generations": _openai("imageGeneration"),
    "/api/v2/image/generations": _openai("imageGeneration"),
    "/api/v2/images/generations": _openai("imageGeneration"),
    # Gemini's own API (google-genai): the model is the path's, slashes and all.
    "/v1beta/models/{model}:generateContent": Route("chatCompletion", GEMINI, stream=False),
    "/v1beta/models/{model}:streamGenerateContent": Route(
        "chatCompletion", GEMINI, stream=True, query=("alt", "sse")
    ),
}
MODEL_ROUTE_TABLE = RouteTable(MODEL_ROUTES)
# Paths outside the model routes whose errors are written in a client format of their own
# (a 404 included): Anthropic's count_tokens, and everything under /v1beta/ is Gemini's
# (countTokens, a model-less path).
FORMAT_PATHS = RouteTable(
    {
        "/v1/messages/count_tokens": Route("chatCompletion", ANTHROPIC_MESSAGES),
        "/v1beta/{model}": Route("chatCompletion", GEMINI),
    }
)


def error_format_of(path: str) -> ErrorRenderer | None:
    """The error shape of a path's client format, for layers outside the routing one (CORS);
    None: the hub's own."""
    found = MODEL_ROUTE_TABLE.match(path) or FORMAT_PATHS.match(path)
    return found.route.format.error_body if found is not None else None


# No key needed: health, and what the AIGNE SDK reads before it calls (discovery, models).
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/api/health",
        "/__blocklet__.js",
        "/api/ai/models",
        "/metrics",
        "/login",
        "/login/link",
        "/logout",
        # The API's description: what a client generator reads before it has a key.
        OPENAPI_PATH,
        # Signed by the payment service instead (hub.payments.signatures).
        *payments.PATHS,
    }
)
SESSION_MAX_AGE = 7 * 24 * 3600


def build_router(
    store: SqlStore, registry: ProviderRegistry, settings: Settings, metrics: Metrics
) -> JsonRouter:
    billing = settings.billing
    signer = session_signer(settings.session_secret)
    admin = Admin(store)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> JSONResponse:
        """The models this hub serves: every priced model, and those the providers list (for
        a key limited to some models, those only)."""
        identity = get_identity(request.scope)
        scope = identity.models if identity is not None else None
        return JSONResponse({"object": "list", "data": await listed_models(admin, registry, scope)})

    async def model(request: Request) -> JSONResponse:
        """One model's entry; its id may contain slashes (`openrouter/openai/gpt-4o`)."""
        identity = get_identity(request.scope)
        scope = identity.models if identity is not None else None
        wanted = request.path_params["id"]
        for entry in await listed_models(admin, registry, scope):
            if entry["id"] == wanted:
                return JSONResponse(entry)
        raise HubError(404, "unknown_model", f"The model '{wanted}' is not served.", "model")

    # What the AIGNE SDK reads to find the hub: the hub's component at the root, at the
    # configured address (never the request's Host header, which anyone can set).
    discovery = {
        "appName": "AIGNE Hub",
        "appUrl": settings.public_address,
        "prefix": "/",
        "componentMountPoints": [
            {
                "did": aigne.AIGNE_HUB_DID,
                "name": "ai-kit",
                "title": "AIGNE Hub",
                "mountPoint": "/",
                "status": "running",
            },
        ],
    }
    discovery_script = f"window.blocklet = {json.dumps(discovery)};"

    async def blocklet(request: Request) -> Response:
        if request.query_params.get("type") == "json":
            return JSONResponse(discovery)
        return Response(discovery_script, media_type="application/javascript")

    async def ai_models(request: Request) -> JSONResponse:
        served = {r["model"] for r in await admin.list_rates() if registry.serves(r["model"])}
        listing = aigne_models.models_listing(
            await admin.list_rates(), served, request.query_params.get("type")
        )
        return JSONResponse(listing)

    async def status(request: Request) -> JSONResponse:
        """Whether the caller can use a model now: served, priced, and paid for."""
        model = request.query_params.get("model", "")
        identity = get_identity(request.scope)
        if not registry.serves(model):
            return JSONResponse({"available": False, "error": f"Model '{model}' is not served."})
        if (
            identity is not None
            and identity.models is not None
            and not identity.models.allows(model)
        ):
            return JSONResponse(
                {"available": False, "error": f"This API key may not use the model '{model}'."}
            )
        if billing:
            priced = {r["model"] for r in await admin.list_rates()}
            if model not in priced:
                return JSONResponse({"available": False, "error": f"Model '{model}' has no rate."})
            if identity is not None and await store.balance(identity.account_id, fresh=True) <= 0:
                return JSONResponse({"available": False, "error": "Insufficient credits."})
        return JSONResponse({"available": True})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if (trimmed := _without_trailing_slash(scope, router)) is not None:
            await RedirectResponse(trimmed, status_code=307)(scope, receive, send)
            return
        await send_error(send, 404, "not_found", f"No route for {scope['path']}.")

    router = JsonRouter(
        routes=[
            JsonRoute("/health", health),
            JsonRoute("/api/health", health),
            JsonRoute("/v1/models", models),
            JsonRoute("/api/v2/models", models),
            JsonRoute("/v1/models/{id:path}", model),
            # Estimated by the hub, neither recorded nor billed (see anthropic_messages_count).
            JsonRoute(
                "/v1/messages/count_tokens",
                CountTokens(registry, settings.limits.max_body_bytes).handle,
                methods=["POST"],
            ),
            JsonRoute("/api/v2/models/{id:path}", model),
            # Estimated by the hub, neither recorded nor billed (see gemini_count).
            JsonRoute(
                "/v1beta/models/{model:path}:countTokens",
                GeminiCountTokens(registry, settings.limits.max_body_bytes).handle,
                methods=["POST"],
            ),
            JsonRoute("/__blocklet__.js", blocklet),
            JsonRoute("/api/ai/models", ai_models),
            JsonRoute("/api/v2/status", status),
            JsonRoute("/metrics", prometheus),
            JsonRoute(OPENAPI_PATH, openapi_route(settings.public_url)),
            *usage_api.routes(admin),
            *admin_api.routes(admin, registry, settings),
            *budget_api.routes(admin),
            *login.routes(
                admin,
                store,
                signer,
                SESSION_MAX_AGE,
                public_url=settings.public_url,
            ),
            *dashboard.routes(admin, registry, settings, metrics),
            *payments.payment_routes(Payments(store), settings.payments),
        ],
        default=not_found,
        # Starlette's own slash redirect is absolute, built from the Host header.
        redirect_slashes=False,
        middleware=[Middleware(SecurityHeaders)],
    )
    return router


def knows(router: Router) -> Callable[[Scope], bool]:
    """Whether the router serves a path (any method), or would redirect it without its
    trailing slash: the test for answering 404 before auth asks an unknown path for a key."""

    def known(scope: Scope) -> bool:
        if any(route.matches(scope)[0] != Match.NONE for route in router.routes):
            return True
        return _without_trailing_slash(scope, router) is not None

    return known


def _without_trailing_slash(scope: Scope, router: Router) -> str | None:
    """`/dashboard/` -> `/dashboard` (with the query), as a relative address, when a route
    has the path without the slash; else None."""
    path: str = scope["path"]
    trimmed = path.rstrip("/")
    if not trimmed or trimmed.startswith("//") or scope["method"] not in ("GET", "HEAD"):
        return None
    probe = {**scope, "path": trimmed}
    if all(route.matches(probe)[0] == Match.NONE for route in router.routes):
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return trimmed + (f"?{query}" if query else "")
