"""The thin streaming reverse proxy: one request upstream, the answer back as it arrives."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio
import httpx
from starlette.types import Message, Receive, Scope, Send

from hub.providers.openai import error_message, usage_from, usage_in_body
from hub.providers.registry import ProviderRegistry
from hub.sse import EventSplitter, encode, json_data
from middleware.call import Call, get_call
from middleware.errors import send_error

logger = logging.getLogger("aigne_hub.proxy")

_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Tell nginx-like front proxies not to hold chunks back.
    (b"x-accel-buffering", b"no"),
]
# Statuses about the hub's own credential at the provider, not about the caller's request.
_CREDENTIAL_STATUSES = frozenset({401, 402, 403})


class Proxy:
    """The ASGI app behind the middlewares for the model routes."""

    def __init__(self, registry: ProviderRegistry, transport: httpx.AsyncBaseTransport) -> None:
        self.registry = registry
        # The transport, not an AsyncClient: the client's cookie, redirect and auth machinery
        # is all behaviour a proxy must not have, and cost a sixth of the hub's CPU.
        self.transport = transport
        self._secrets = [s for s in registry.secrets() if len(s) >= 8]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        if call is None:
            if scope["method"] != "POST":
                await send_error(send, 405, "method_not_allowed", "Use POST for this route.")
            else:
                await send_error(send, 500, "misconfigured", "The proxy needs the Call middleware.")
            return
        if call.provider is None:
            resolved = self.registry.resolve(call.model)
            if resolved is None:
                await send_error(
                    send,
                    404,
                    "unknown_model",
                    f"The model '{call.model}' is not served by this hub.",
                    "model",
                )
                return
            call.provider, call.upstream_model = resolved
        provider = self.registry.get(call.provider)
        request = provider.build_request(call)
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            logger.warning("provider %s failed: %s", provider.name, self._scrub(repr(exc)))
            await self._refuse(send, call, *_failure(exc, "request", provider.name))
            return
        if call.stream and call.call_type == "chatCompletion" and response.status_code == 200:
            try:
                await self._stream(receive, send, call, response)
            finally:
                # Shielded: a cancelled stream must still close (not leak) the upstream socket.
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            return
        try:
            if response.status_code >= 400 or response.status_code < 200:
                await self._upstream_error(send, call, response)
            else:
                await self._whole(send, call, response)
        finally:
            await response.aclose()

    async def _refuse(self, send: Send, call: Call, status: int, code: str, message: str) -> None:
        call.fail(code, message)
        await send_error(send, status, code, message)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _upstream_error(self, send: Send, call: Call, response: httpx.Response) -> None:
        name = call.provider
        try:
            message = self._scrub(error_message(await response.aread()))
        except httpx.HTTPError:
            message = "no message"
        status = response.status_code
        if status in _CREDENTIAL_STATUSES:
            logger.warning("provider %s rejected its credential: %s %s", name, status, message)
            await self._refuse(
                send,
                call,
                502,
                "upstream_auth_failed",
                f"Provider '{name}' rejected the hub's credential (HTTP {status}).",
            )
            return
        code = "upstream_rate_limited" if status == 429 else "upstream_error"
        client_status = status if 400 <= status <= 599 else 502
        await self._refuse(send, call, client_status, code, f"Provider '{name}': {message}")

    async def _whole(self, send: Send, call: Call, response: httpx.Response) -> None:
        try:
            body = await _read_all(response)
        except httpx.HTTPError as exc:
            await self._refuse(send, call, *_failure(exc, "body", call.provider))
            return
        try:
            call.usage = usage_in_body(body, call.call_type)
        except ValueError:
            await self._refuse(
                send,
                call,
                502,
                "upstream_invalid_response",
                f"Provider '{call.provider}' answered with something not JSON.",
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", call.request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _stream(
        self, receive: Receive, send: Send, call: Call, response: httpx.Response
    ) -> None:
        wants_usage = _wants_usage(call)
        splitter = EventSplitter()
        closing = b""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_STREAM_HEADERS, (b"x-request-id", call.request_id.encode())],
            }
        )
        async with anyio.create_task_group() as group:
            # A hung-up client is only visible through receive(); when it comes, cancel the
            # upstream read so the provider connection is closed at once.
            group.start_soon(_watch_disconnect, receive, call, group.cancel_scope)
            try:
                async for chunk in response.aiter_bytes():
                    out = _tap(splitter.feed(chunk), call, wants_usage)
                    if out and not await _send_body(send, call, out):
                        break
            except httpx.HTTPError as exc:
                _, code, message = _failure(exc, "stream", call.provider)
                call.fail(code, message)
                # The status line is gone; an `error` chunk is what OpenAI SDKs raise on.
                error = {"message": message, "type": "upstream_error", "code": code}
                closing = encode({"error": error})
            group.cancel_scope.cancel()
        if not call.client_gone:
            await _send_body(send, call, splitter.flush() + closing, more=False)


async def _read_all(response: httpx.Response) -> bytes:
    """The whole body. Plain bodies (we ask for identity) skip httpx's decoder layers."""
    if response.headers.get("content-encoding", "identity") != "identity":
        return await response.aread()
    return b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]


# What an upstream failure means to the client, by the stage it happened at:
# (status, code, message) for a timeout, then for any other transport failure.
_FAILURES: dict[str, tuple[tuple[int, str, str], tuple[int, str, str]]] = {
    "request": (
        (504, "upstream_timeout", "Provider '{}' did not answer in time."),
        (502, "upstream_unavailable", "Could not reach provider '{}'."),
    ),
    "body": (
        (504, "upstream_timeout", "Provider '{}' stopped answering."),
        (502, "upstream_disconnected", "Provider '{}' closed the connection early."),
    ),
    "stream": (
        (504, "upstream_timeout", "Provider '{}' stalled mid-stream."),
        (502, "upstream_disconnected", "Provider '{}' broke off the stream."),
    ),
}


def _failure(exc: httpx.HTTPError, stage: str, provider: str | None) -> tuple[int, str, str]:
    timeout, other = _FAILURES[stage]
    status, code, message = timeout if isinstance(exc, httpx.TimeoutException) else other
    return status, code, message.format(provider)


def _wants_usage(call: Call) -> bool:
    options = call.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _tap(events: Iterable[bytes], call: Call, wants_usage: bool) -> bytes:
    """Pass events through, noting usage; drop the usage-only chunk if it was not asked for."""
    kept: list[bytes] = []
    for event in events:
        if b'"usage"' in event and b'"usage":null' not in event and b'"usage": null' not in event:
            payload = json_data(event)
            usage = usage_from(payload, call.call_type)
            if usage is not None:
                call.usage = usage
                if not wants_usage and isinstance(payload, dict) and not payload.get("choices"):
                    continue
        kept.append(event)
    return b"".join(kept)


async def _send_body(send: Send, call: Call, body: bytes, more: bool = True) -> bool:
    try:
        await send({"type": "http.response.body", "body": body, "more_body": more})
    except OSError:  # servers on ASGI spec 2.4 raise here when the client has gone
        call.client_gone = True
        return False
    return True


async def _watch_disconnect(receive: Receive, call: Call, scope: anyio.CancelScope) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            call.client_gone = True
            scope.cancel()
            return
