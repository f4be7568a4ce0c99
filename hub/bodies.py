"""Reading request bodies on the hub's own routes (admin and user APIs, sign-in): bounded
while they are read, and JSON of the shape a handler expects, or a clear 4xx.

The model routes read theirs in the Call middleware, with the configured body limit.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from starlette.requests import ClientDisconnect, Request

from middleware.errors import HubError

# The largest admin or user API request (a rate table of thousands of models fits).
MAX_API_BODY = 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes: a body that is too
    large is never held whole, whatever its Content-Length says."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise HubError(
            400, "client_disconnected", "The client left before sending the body."
        ) from exc
    return b"".join(chunks)


async def json_object(request: Request, limit: int = MAX_API_BODY) -> dict[str, Any]:
    """The body as a JSON object (400 for anything else: `null`, a number, a list)."""
    value = parse_json(await read_body(request, limit))
    if not isinstance(value, dict):
        raise HubError(400, "invalid_request", "The request body must be a JSON object.")
    return value


async def json_list(request: Request, limit: int = MAX_API_BODY) -> list[Any]:
    """The body as a JSON array (400 for anything else)."""
    value = parse_json(await read_body(request, limit))
    if not isinstance(value, list):
        raise HubError(400, "invalid_request", "The request body must be a JSON array.")
    return value


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no NaN or Infinity (not JSON, and not a number a ledger can hold), and
    nesting only as deep as the interpreter's recursion limit allows, answered as a 400."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except ValueError as exc:  # also UnicodeDecodeError: bytes that are not UTF-8
        raise HubError(400, "invalid_json", f"The request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise HubError(400, "invalid_json", "The request body is nested too deeply.") from exc


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _too_large(limit: int) -> NoReturn:
    raise HubError(413, "body_too_large", f"The request body exceeds {limit} bytes.")
