"""The one JSON error shape every layer of the hub answers with."""

from __future__ import annotations

import json

from starlette.types import Send

# Stable `type` per status, mirroring the OpenAI error vocabulary that SDKs understand.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    504: "upstream_timeout",
}


def error_body(status: int, code: str, message: str, param: str | None = None) -> bytes:
    """`{"error": {"message", "type", "code", "param"}}` as bytes."""
    error = {
        "message": message,
        "type": _TYPES.get(status, "api_error"),
        "code": code,
        "param": param,
    }
    return json.dumps({"error": error}).encode()


async def send_error(
    send: Send, status: int, code: str, message: str, param: str | None = None
) -> None:
    """Answer the request with a complete JSON error response."""
    body = error_body(status, code, message, param)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HubError(Exception):
    """An error with a status and a stable code, raised inside the hub and answered as JSON."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
