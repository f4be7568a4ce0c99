"""Read the request body once, parse it, and describe the request as a Call."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from middleware.call import CALL_KEY, Call, CallType, Identity, get_identity
from middleware.errors import HubError, send_error
from middleware.ports import ModelCatalog
from middleware.routing import OPENAI_WIRE, Match, Route, RouteTable

__all__ = ["APP_DID_HEADER", "CallMiddleware", "Route", "RouteTable"]

# The field that must be present for each call type, besides `model`.
_REQUIRED: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "chatCompletion": ("messages", list),
    "embedding": ("input", (str, list)),
    "imageGeneration": ("prompt", str),
}


APP_DID_HEADER = "x-aigne-hub-client-did"
# The longest model name or header value a call record keeps (its columns are this wide).
MAX_TEXT = 200


class CallMiddleware:
    """Fills `scope["hub.call"]` for the routes it knows; 400/413/404 on bad requests."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, CallType | Route] | RouteTable,
        max_body_bytes: int = 4 * 1024 * 1024,
        models: ModelCatalog | None = None,
        anonymous: Identity | None = None,
    ) -> None:
        self.app = app
        self.routes = routes if isinstance(routes, RouteTable) else RouteTable(routes)
        self.max_body_bytes = max_body_bytes
        self.models = models
        self.anonymous = anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.match(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        identity = get_identity(scope) or self.anonymous
        if identity is None:
            await send_error(send, 401, "missing_api_key", "This route needs an API key.")
            return
        needs = route.route.query
        if needs is not None and needs[1] not in parse_qs(
            scope["query_string"].decode("latin-1")
        ).get(needs[0], ()):
            await send_error(
                send,
                400,
                "unsupported_parameter",
                f"This route is served with '{needs[0]}={needs[1]}' in its query only.",
                needs[0],
            )
            return
        headers = _wanted_headers(scope)
        try:
            raw = await self._read_body(headers, receive)
            call = self._make_call(route, raw, identity, headers)
        except HubError as exc:
            await send_error(send, exc.status, exc.code, exc.message, exc.param)
            return
        passed = getattr(route.route.format, "passed_headers", ())
        if passed:
            call.passed_headers = {
                k.decode("latin-1"): v.decode("latin-1")
                for k, v in scope["headers"]
                if k.decode("latin-1") in passed
            }
        scope[CALL_KEY] = call
        await self.app(scope, _replay(raw, receive), send)

    async def _read_body(self, headers: dict[bytes, str], receive: Receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HubError(
                    400, "client_disconnected", "The client left before sending the body."
                )
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _make_call(
        self, found: Match, raw: bytes, identity: Identity, headers: dict[bytes, str]
    ) -> Call:
        route = found.route
        call_type = route.call_type
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HubError(
                400, "invalid_json", f"The request body is not valid JSON: {exc}"
            ) from exc
        except RecursionError as exc:
            raise HubError(400, "invalid_json", "The request body is nested too deeply.") from exc
        if not isinstance(body, dict):
            raise HubError(400, "invalid_json", "The request body must be a JSON object.")
        body = _normalized(route, found.model, body)
        model = _field(body, "model", str)
        # Printable only: the name goes into the call record, log lines, metrics and (for
        # Gemini) the upstream URL, where NUL, a lone surrogate or CR/LF would break them.
        if not model.strip() or len(model) > MAX_TEXT or not model.isprintable():
            raise HubError(
                400,
                "invalid_field",
                f"'model' must be 1 to {MAX_TEXT} printable characters.",
                "model",
            )
        if identity.models is not None and not identity.models.allows(model):
            raise HubError(
                403, "model_not_allowed", f"This API key may not use the model '{model}'.", "model"
            )
        name, kind = _REQUIRED[call_type]
        _field(body, name, kind)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise HubError(400, "invalid_field", "'stream' must be true or false.", "stream")
        if stream and call_type != "chatCompletion":
            # A streamed image or embedding answer could be neither read for usage nor billed.
            raise HubError(400, "invalid_field", "Only chat completions can be streamed.", "stream")
        call = Call(
            identity=identity,
            call_type=call_type,
            model=model,
            body=body,
            raw_body=raw,
            stream=stream,
            dialect=route.dialect,
            # The plain default stays None: the hub reads that as its own OpenAI chat format.
            format=None if route.format is OPENAI_WIRE else route.format,
            app_did=_app_did(identity, headers),
        )
        call.request_id = _header(headers, _REQUEST_ID) or call.id
        if self.models is not None:
            resolved = self.models.resolve(model)
            if resolved is None:
                raise HubError(
                    404, "unknown_model", f"The model '{model}' is not served by this hub.", "model"
                )
            call.provider, call.upstream_model = resolved
        return call


_APP_DID = APP_DID_HEADER.encode()
_REQUEST_ID = b"x-request-id"
_WANTED = frozenset({b"content-length", _APP_DID, _REQUEST_ID})


def _wanted_headers(scope: Scope) -> dict[bytes, str]:
    """The few headers this layer reads, in one pass (ASGI header names are lower-case)."""
    return {k: v.decode("latin-1") for k, v in scope["headers"] if k in _WANTED}


def _app_did(identity: Identity, headers: dict[bytes, str]) -> str | None:
    """The app a call is attributed to. A key issued for an app always records that app, so
    usage cannot be put on another app's account; the header names the app only for keys
    issued without one (and for dashboard sessions)."""
    return identity.app_did or _header(headers, _APP_DID)


def _header(headers: dict[bytes, str], name: bytes) -> str | None:
    value = headers.get(name)
    if value is not None and len(value) > MAX_TEXT:
        # Stored in the call record: an over-long value would make the record unwritable.
        raise HubError(
            400, "invalid_header", f"The {name.decode()} header exceeds {MAX_TEXT} characters."
        )
    return value


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in body:
        raise HubError(400, "missing_field", f"The field '{name}' is required.", name)
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HubError(400, "invalid_field", f"The field '{name}' has the wrong type.", name)
    return value


def _normalized(route: Route, path_model: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """The client's body in the normalized (OpenAI) shape, with what the path says."""
    try:
        body = route.format.normalize(body, route.call_type)
    except HubError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise HubError(400, "invalid_request", f"The request cannot be read: {exc}") from exc
    if path_model is not None or route.stream is not None:
        body = dict(body)  # the format may have handed back the client's own object
        if path_model is not None:
            body["model"] = path_model
        if route.stream is not None:
            body["stream"] = route.stream
    return body


def _too_large(limit: int) -> HubError:
    return HubError(413, "body_too_large", f"The request body exceeds {limit} bytes.")


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body to the app once, then listens as usual."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay
