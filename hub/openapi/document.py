"""The OpenAPI 3.1 document of the hub's own JSON APIs (admin, user, payments), built from
the operations listed per area; served at `GET /openapi.json` (hub.routes)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from hub.openapi import admin_ops, payment_ops, user_ops
from hub.openapi.spec import ERROR_SCHEMA, Operation, error_responses

OPERATIONS: tuple[Operation, ...] = (
    *admin_ops.OPERATIONS,
    *user_ops.OPERATIONS,
    *payment_ops.OPERATIONS,
)
OPENAPI_PATH = "/openapi.json"

SECURITY_SCHEMES = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A hub API key (`ahk_...`), as `aigne-hub keys create` prints it.",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "aigne_hub_session",
        "description": (
            "The dashboard's session cookie; a state-changing request with it must be sent "
            "as `content-type: application/json`."
        ),
    },
    "stripeSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Stripe-Signature",
        "description": "Stripe's signature of the body with the endpoint secret (`whsec_...`).",
    },
    "webhookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-signature",
        "description": "Standard Webhooks: with `webhook-id` and `webhook-timestamp` headers.",
    },
}


def document(server_url: str | None = None) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = op.described()
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "AIGNE Hub API",
            "version": _version(),
            "description": (
                "The hub's own JSON APIs: admin, user and payment webhooks. The model routes "
                "(`/v1/...`, `/api/v2/...`) follow their providers' formats and are not "
                'described here. Every error is `{"error": {message, type, code, param}}`.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "responses": error_responses(),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def openapi_route(server_url: str | None) -> Any:
    """The handler for `GET /openapi.json`: the document is the same for every request,
    built once."""
    built = document(server_url)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(built)

    return openapi


def _version() -> str:
    try:
        return version("aigne-hub")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"
