"""A Starlette route that answers a wrong method, a HubError or a NUL in the request's
parameters with the hub's JSON error."""

from __future__ import annotations

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from middleware.errors import HubError, send_error


class JsonRoute(Route):
    """A route whose errors are the hub's JSON errors, not plain text or a 500."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            await send_error(send, 405, "method_not_allowed", f"Use {allowed} for this route.")
            return
        if b"%00" in scope["query_string"] or "\x00" in scope["path"]:
            # PostgreSQL refuses NUL in text: say so here rather than fail in the query.
            await send_error(send, 400, "invalid_request", "Parameters may not contain NUL.")
            return
        try:
            await super().handle(scope, receive, send)
        except HubError as exc:
            await send_error(send, exc.status, exc.code, exc.message, exc.param)
