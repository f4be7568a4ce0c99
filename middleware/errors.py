"""The one JSON error shape every layer of the hub answers with, and the last resort for
an exception nothing else answered."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.types import Scope, Send

logger = logging.getLogger("aigne_hub.errors")

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
# A client's request id is echoed in a header and a log line: only a short, plain token.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
REQUEST_ID_HEADER = b"x-request-id"


def error_body(status: int, code: str, message: str, param: str | None = None) -> bytes:
    """`{"error": {"message", "type", "code", "param"}}` as bytes."""
    error = {
        "message": message,
        "type": _TYPES.get(status, "api_error"),
        "code": code,
        "param": param,
    }
    return json.dumps({"error": error}).encode()


# Renders (status, code, message, param) as an error body in a client's format.
ErrorRenderer = Callable[[int, str, str, str | None], bytes]
# The client format of the request under way, set once per request by the outermost
# routing layer (middleware.routing.RouteMiddleware) so that every layer's errors, from
# auth to the proxy, come out in the shape the client's SDK raises on. A context variable
# rather than a parameter: each request runs in its own task (and tasks it starts copy it).
_ERROR_FORMAT: ContextVar[ErrorRenderer] = ContextVar("hub_error_format", default=error_body)


@contextmanager
def use_error_format(render: ErrorRenderer) -> Iterator[None]:
    """Errors sent with `send_error` inside this block are rendered by `render`."""
    token = _ERROR_FORMAT.set(render)
    try:
        yield
    finally:
        _ERROR_FORMAT.reset(token)


def current_error_format() -> ErrorRenderer:
    """The error renderer of the request under way (for layers that build a Response)."""
    return _ERROR_FORMAT.get()


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer an HTTP request with a complete JSON error response (never a websocket: see
    `refuse_websocket`), in the client format of the request under way."""
    body = _ERROR_FORMAT.get()(status, code, message, param)
    await _send_json(send, "http", status, body, headers)


async def refuse_websocket(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    """Refuse a websocket before accepting it. A server that offers the denial-response
    extension sends our JSON error with `status`; any other answers the close with 403."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await _send_json(send, "websocket.http", status, error_body(status, code, message))
        return
    await send({"type": "websocket.close", "code": 1008})  # policy violation


async def _send_json(
    send: Send,
    kind: str,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    # `kind` is "http" for a request's answer, "websocket.http" for a websocket's denial.
    await send(
        {
            "type": f"{kind}.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": f"{kind}.response.body", "body": body})


def request_id_of(scope: Scope) -> str:
    """The client's x-request-id, else a fresh one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1")
            return text
    return uuid.uuid4().hex


async def send_store_unavailable(send: Send, what: str) -> None:
    """503 `store_unavailable`: the store did not answer before the call was made (`what`
    it could not do), so nothing went upstream and nothing is charged; worth a retry."""
    await send_error(
        send,
        503,
        "store_unavailable",
        f"The hub could not {what} (its database did not answer), so the call was not made "
        "and nothing was charged. Retry in a moment.",
        headers=[(b"retry-after", b"1")],
    )


async def answer_unhandled(scope: Scope, send: Send, exc: Exception, request_id: str) -> None:
    """The last resort for an exception that escaped every handler: one ERROR line naming
    the request (the traceback only at DEBUG, so a request that always fails cannot fill
    the log), then a JSON 500 if the response has not started, or else its end."""
    if not _SAFE_REQUEST_ID.fullmatch(request_id):  # the client's, for a header and a log
        request_id = uuid.uuid4().hex
    logger.error(
        "unhandled %s on %s %r (request %s)",
        type(exc).__name__,
        scope.get("method", scope["type"]),
        scope.get("path", ""),
        request_id,
    )
    logger.debug("traceback of request %s", request_id, exc_info=exc)
    # Whether the response started is known to the server alone; asking it costs nothing
    # per request, where watching every message sent would not. A server refuses a second
    # start (uvicorn, hypercorn and httpx's test transport all raise).
    try:
        await send_error(
            send,
            500,
            "internal_error",
            f"The hub failed to handle this request (request id {request_id}).",
            headers=[(REQUEST_ID_HEADER, request_id.encode())],
        )
        return
    except Exception:
        pass
    try:
        # Started: end the body where it is. Under a declared length the server refuses,
        # and closes the connection, which tells the client the answer is cut.
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except Exception:
        pass


class HubError(Exception):
    """An error with a status and a stable code, raised inside the hub and answered as JSON."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
