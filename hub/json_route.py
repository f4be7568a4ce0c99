"""A Starlette route that answers a wrong method with the hub's JSON error."""

from __future__ import annotations

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from middleware.errors import send_error


class JsonRoute(Route):
    """A route whose wrong-method answer is the hub's JSON error, not plain text."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            await send_error(send, 405, "method_not_allowed", f"Use {allowed} for this route.")
            return
        await super().handle(scope, receive, send)
