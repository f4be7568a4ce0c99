"""URL → handler: the model routes go through the proxy, the rest through a small router."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from hub.providers.registry import ProviderRegistry
from hub.store import SqlStore
from hub.store.admin import Admin
from middleware.call import CallType
from middleware.errors import send_error

# Both the AIGNE Hub paths and the OpenAI SDK's paths; `/v1/image/...` as the issue names it.
MODEL_ROUTES: dict[str, CallType] = {
    "/v1/chat/completions": "chatCompletion",
    "/api/v2/chat/completions": "chatCompletion",
    "/v1/embeddings": "embedding",
    "/api/v2/embeddings": "embedding",
    "/v1/images/generations": "imageGeneration",
    "/v1/image/generations": "imageGeneration",
    "/api/v2/image/generations": "imageGeneration",
    "/api/v2/images/generations": "imageGeneration",
}
PUBLIC_PATHS = frozenset({"/health", "/api/health"})


def build_router(store: SqlStore, registry: ProviderRegistry) -> Router:
    admin = Admin(store)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> JSONResponse:
        """The models this hub serves: every priced model, and those the providers list."""
        seen: dict[str, dict[str, Any]] = {}
        for rate in await admin.list_rates():
            name = rate["model"]
            provider = name.split("/", 1)[0]
            if registry.resolve(name) is not None and name not in seen:
                seen[name] = {"id": name, "object": "model", "created": 0, "owned_by": provider}
        for provider in registry.providers.values():
            for model in provider.models:
                name = f"{provider.name}/{model}"
                seen.setdefault(
                    name, {"id": name, "object": "model", "created": 0, "owned_by": provider.name}
                )
        return JSONResponse({"object": "list", "data": sorted(seen.values(), key=_by_id)})

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(send, 404, "not_found", f"No route for {scope['path']}.")

    return Router(
        routes=[
            Route("/health", health),
            Route("/api/health", health),
            Route("/v1/models", models),
            Route("/api/v2/models", models),
        ],
        default=not_found,
    )


def _by_id(entry: dict[str, Any]) -> str:
    return str(entry["id"])
