"""Which model route a path is, and in which client format its errors are answered.

A route is a call type plus the client format its callers speak. Paths are exact
(`/v1/chat/completions`) or patterns with a `{model}` part
(`/v1beta/models/{model}:generateContent`, where the model may contain slashes): the
model then comes from the path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.call import CallType
from middleware.errors import error_body, send_error, use_error_format

ROUTE_KEY = "hub.route"


class WireFormat(Protocol):
    """What the middlewares need of a client format (hub.dialects.base.ClientFormat has
    the rest): its name, how to read its requests, and its error shape."""

    name: str

    def normalize(self, body: dict[str, Any], call_type: CallType) -> dict[str, Any]: ...

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes: ...


class _OpenAIWire:
    """The default: OpenAI chat clients, whose bodies are already the normalized shape."""

    name = "openai"

    def normalize(self, body: dict[str, Any], call_type: CallType) -> dict[str, Any]:
        return body

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes:
        return error_body(status, code, message, param)


OPENAI_WIRE: WireFormat = _OpenAIWire()


@dataclass(frozen=True, slots=True)
class Route:
    """A model route: its call type and the client format its callers speak.

    `stream`, when set, says whether the route streams regardless of the body (Gemini's
    `:streamGenerateContent`); the model of a pattern route is taken from its path.
    `query`, when set, is a query parameter the route is served with only (Gemini streams
    as SSE with `alt=sse` only; without it, a JSON array the hub does not serve).
    """

    call_type: CallType
    format: WireFormat = OPENAI_WIRE
    stream: bool | None = None
    query: tuple[str, str] | None = None

    @property
    def dialect(self) -> str:
        return self.format.name


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    model: str | None = None  # from the path, for a pattern route


class RouteTable:
    """Exact paths by dict lookup (the common case costs one), then `{model}` patterns."""

    def __init__(self, routes: Mapping[str, CallType | Route]) -> None:
        self.exact: dict[str, Match] = {}
        self.patterns: list[tuple[re.Pattern[str], Route]] = []
        for path, spec in routes.items():
            route = spec if isinstance(spec, Route) else Route(spec)
            if "{model}" in path:
                before, after = path.split("{model}", 1)
                # DOTALL: a model with a line break still matches (and is refused as a bad
                # model by the Call layer, in the route's format) rather than falling out.
                regex = re.compile(f"{re.escape(before)}(?P<model>.+){re.escape(after)}", re.DOTALL)
                self.patterns.append((regex, route))
            else:
                self.exact[path] = Match(route)

    def match(self, path: str) -> Match | None:
        found = self.exact.get(path)
        if found is not None or not self.patterns:
            return found
        for regex, route in self.patterns:
            hit = regex.fullmatch(path)
            if hit is not None:
                return Match(route, hit.group("model"))
        return None


class RouteMiddleware:
    """Outermost of the policy layers: decides once per request, from the path, the client
    format every layer's errors are written in; and answers an unknown path with 404
    before auth could ask it for a key. `known` says whether another app (the hub's
    router) serves a path that is not a model route; `formats` holds such paths that
    belong to a client format (Anthropic's count_tokens, Gemini's /v1beta/ paths), for
    their errors, a 404 included."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: RouteTable,
        known: Callable[[Scope], bool],
        formats: RouteTable | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.known = known
        self.formats = formats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self.routes.match(scope["path"])
        if found is None:
            own = self.formats.match(scope["path"]) if self.formats is not None else None
            if own is None:
                await self._other(scope, receive, send)
                return
            with use_error_format(own.route.format.error_body):
                await self._other(scope, receive, send)
            return
        scope[ROUTE_KEY] = found
        with use_error_format(found.route.format.error_body):
            await self.app(scope, receive, send)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A path that is not a model route: the router's, or a 404 before auth."""
        if not self.known(scope):
            await send_error(send, 404, "not_found", f"No route for {scope['path']}.")
            return
        await self.app(scope, receive, send)
