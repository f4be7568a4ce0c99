"""Starlette's CORS middleware, with its refusals in the hub's JSON error shape, and the
request headers the official SDKs' browser builds send.

Starlette matches allowed headers by exact (lower-case) name, with no prefix or wildcard
short of allowing every header: so each name an SDK sends is listed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.errors import ErrorRenderer, current_error_format, use_error_format
from middleware.parse import APP_DID_HEADER

# The hub's own and the plain HTTP ones.
_HUB_HEADERS = ("authorization", "content-type", APP_DID_HEADER, "x-request-id")
# The Stainless-generated SDKs (openai, anthropic; Python and JS): platform, retry and
# helper headers on every request.
_STAINLESS_HEADERS = tuple(
    f"x-stainless-{name}"
    for name in (
        "arch",
        "async",
        "custom-event-handler",
        "custom-poll-interval",
        "helper",
        "helper-method",
        "lang",
        "os",
        "package-version",
        "poll-helper",
        "raw-response",
        "read-timeout",
        "retry-count",
        "runtime",
        "runtime-version",
        "stream-helper",
        "timeout",
    )
)
# Each vendor's key and version headers: Anthropic's SDK needs its browser opt-in header
# let through to run in a page at all; google-genai sends its key and client id.
_VENDOR_HEADERS = (
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-api-key",
    "x-goog-api-key",
    "x-goog-api-client",
    "x-goog-user-project",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "idempotency-key",
)
SDK_HEADERS = (*_HUB_HEADERS, *_STAINLESS_HEADERS, *_VENDOR_HEADERS)


class JsonCORSMiddleware(CORSMiddleware):
    """Answers a browser's preflight before auth asks for a key; a refused one (an origin,
    method or header not allowed) is a JSON 400, like every other error, in the client
    format of its path (`error_format_of`: this layer runs outside the routing one)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        error_format_of: Callable[[str], ErrorRenderer | None] = lambda path: None,
        **options: Any,
    ) -> None:
        super().__init__(app, **options)
        self.error_format_of = error_format_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        render = self.error_format_of(scope["path"]) if scope["type"] == "http" else None
        if render is None:
            await super().__call__(scope, receive, send)
            return
        with use_error_format(render):
            await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        reason = bytes(response.body).decode()  # "Disallowed CORS origin, method"
        cors_headers = {k: v for k, v in response.headers.items() if not k.startswith("content-")}
        return Response(
            current_error_format()(400, "cors_refused", f"{reason}.", None),
            status_code=400,
            headers=cors_headers,
            media_type="application/json",
        )
