"""Starlette's CORS middleware, with its refusals in the hub's JSON error shape."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from middleware.errors import error_body


class JsonCORSMiddleware(CORSMiddleware):
    """Answers a browser's preflight before auth asks for a key; a refused one (an origin,
    method or header not allowed) is a JSON 400, like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        reason = bytes(response.body).decode()  # "Disallowed CORS origin, method"
        cors_headers = {k: v for k, v in response.headers.items() if not k.startswith("content-")}
        return Response(
            error_body(400, "cors_refused", f"{reason}."),
            status_code=400,
            headers=cors_headers,
            media_type="application/json",
        )
