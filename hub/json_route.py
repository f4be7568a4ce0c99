"""The router and route every non-model request goes through: whatever they refuse, and
whatever a handler or a Starlette component (StaticFiles) raises as an HTTP answer, is
answered with the hub's JSON error, never Starlette's plain text."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from middleware.errors import HubError, send_error

# Stable codes for the statuses Starlette's components raise.
_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}
# What an authority (host, optional port) may hold, before the stricter parse below.
_HOST = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%:\[\]]*")


class JsonRouter(Router):
    """A router whose refusals and raised HTTP errors are the hub's JSON errors."""

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = _refusal(scope)
            if refusal is not None:
                await send_error(send, refusal.status, refusal.code, refusal.message, refusal.param)
                return
        try:
            await super().app(scope, receive, send)
        except HubError as exc:
            await send_error(send, exc.status, exc.code, exc.message, exc.param)
        except HTTPException as exc:
            await _send_http_exception(scope, send, exc)


class JsonRoute(Route):
    """A route that answers a method it does not take with a JSON 405."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            await send_error(
                send,
                405,
                "method_not_allowed",
                f"Use {allowed} for this route.",
                headers=[(b"allow", allowed.encode())],
            )
            return
        await super().handle(scope, receive, send)


def _refusal(scope: Scope) -> HubError | None:
    """What makes a request unanswerable by any route, checked once for all of them."""
    query: bytes = scope["query_string"]
    if b"%00" in query or b"\x00" in query or "\x00" in scope["path"]:
        # PostgreSQL refuses NUL in text, and file names cannot hold it: say so here rather
        # than fail in a query or a stat.
        return HubError(400, "invalid_request", "Parameters may not contain NUL.")
    if not query.isascii():
        # Starlette decodes it as UTF-8 into every request.url; bytes past ASCII are to be
        # percent-encoded anyway (RFC 3986).
        return HubError(400, "invalid_request", "Percent-encode the query string's bytes.")
    for name, value in scope["headers"]:
        if name == b"host":
            if not _valid_host(value.decode("latin-1")):
                # Starlette parses it into every request.url: a bad one would raise there.
                return HubError(400, "invalid_header", "The Host header is malformed.", "host")
            break
    return None


def _valid_host(host: str) -> bool:
    if not _HOST.fullmatch(host):
        return False
    try:
        urlsplit(f"//{host}").port  # noqa: B018 - parsing is the check
    except ValueError:  # unbalanced brackets, a bad IPv6 address, a port out of range
        return False
    return True


async def _send_http_exception(scope: Scope, send: Send, exc: HTTPException) -> None:
    status = exc.status_code
    code = _CODES.get(status, "http_error")
    extra = exc.headers or {}
    message = str(exc.detail)
    if status == 404:
        message = f"No route for {scope['path']}."
    elif status == 405:
        message = f"Use {extra.get('Allow', 'another method')} for this route."
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    await send_error(send, status, code, message, headers=headers)
