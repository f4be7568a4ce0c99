"""The thin streaming reverse proxy: one request upstream, the answer back as it arrives."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

import anyio
import httpx
from starlette.types import Message, Receive, Scope, Send

from hub.estimate import answer_tokens, estimate_stream, prompt_tokens
from hub.providers.base import Adapter, StreamTranslator, usage_chunk
from hub.providers.openai import MissingUsage, error_message, usage_from
from hub.providers.pool import Credential
from hub.providers.registry import ProviderRegistry
from hub.sse import EventSplitter, encode, json_data
from middleware.call import Call, Usage, get_call
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
        if not provider.supports(call.call_type):
            await self._refuse(
                send,
                call,
                400,
                "unsupported_call_type",
                f"Provider '{provider.name}' does not offer {call.call_type} calls.",
            )
            return
        response = await self._send(send, call, provider)
        if response is None:
            return
        if call.stream and call.call_type == "chatCompletion" and response.status_code == 200:
            try:
                relay: _Relay = (
                    _PassThrough(call)
                    if provider.passthrough
                    else _Translated(call, provider.stream_translator(call), self._scrub)
                )
                await self._stream(receive, send, call, response, relay)
            finally:
                # Shielded: a cancelled stream must still close (not leak) the upstream socket.
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            return
        try:
            if response.status_code >= 400 or response.status_code < 200:
                await self._upstream_error(send, call, response.status_code, await _body(response))
            else:
                await self._whole(send, call, response, provider)
        finally:
            await response.aclose()

    async def _send(self, send: Send, call: Call, provider: Adapter) -> httpx.Response | None:
        """The upstream response, trying the provider's credentials in turn.

        A connection failure, a timeout, a 429, a 5xx or a refused key before the first byte
        moves on to the next credential (at most MAX_ATTEMPTS, each logged and counted on
        the call); the pool learns from each answer. None when nothing answered, after an
        error has been sent.
        """
        tried: list[Credential] = []
        failure: tuple[int, str, str] | None = None
        last: tuple[int, bytes] = (502, b"")
        while len(tried) < MAX_ATTEMPTS:
            credential = provider.pool.pick(tried)
            if credential is None:
                break
            tried.append(credential)
            call.attempts, call.credential = len(tried), credential.masked
            try:
                request = provider.build_request(call, credential)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                # A request the OpenAI format allows in shape but not in detail (a tool call
                # that is not an object, say) cannot be translated for this provider.
                logger.info("cannot translate call %s for %s: %r", call.id, provider.name, exc)
                await self._refuse(
                    send,
                    call,
                    400,
                    "invalid_request",
                    f"The request could not be translated for provider '{provider.name}': "
                    "check the shape of messages, tools and content parts.",
                )
                return None
            try:
                response = await self.transport.handle_async_request(request)
            except httpx.HTTPError as exc:
                failure = _failure(exc, "request", provider.name)
                self._attempt_failed(call, credential, failure[1])
                continue
            status = response.status_code
            if status < 400:
                provider.pool.succeeded(credential)
                return response
            body = await _body(response)
            if status in _CREDENTIAL_STATUSES and _about_credential(status, body):
                provider.pool.refused(credential)
            elif status == 429 or status >= 500:
                # Judged on recent health: the key that just failed gets less traffic for a
                # while, whether it was throttled or its side of the provider is struggling.
                provider.pool.rate_limited(credential, _retry_after(response))
            elif status != 408:
                # The request itself is at fault: another key would get the same answer.
                await response.aclose()
                await self._upstream_error(send, call, status, body)
                return None
            await response.aclose()
            self._attempt_failed(call, credential, f"HTTP {status}")
            failure = None
            last = (status, body)
        if failure is not None:
            await self._refuse(send, call, *failure)
        else:
            await self._upstream_error(send, call, *last)
        return None

    def _attempt_failed(self, call: Call, credential: Credential, what: str) -> None:
        logger.warning(
            "call %s: provider %s, key %s, attempt %d failed: %s",
            call.id,
            call.provider,
            credential.masked,
            call.attempts,
            what,
        )

    async def _refuse(self, send: Send, call: Call, status: int, code: str, message: str) -> None:
        call.fail(code, message)
        await send_error(send, status, code, message)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _upstream_error(self, send: Send, call: Call, status: int, body: bytes) -> None:
        name = call.provider
        message = self._scrub(error_message(body)) if body else "no message"
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

    async def _whole(
        self, send: Send, call: Call, response: httpx.Response, provider: Adapter
    ) -> None:
        try:
            body = await _read_all(response)
        except httpx.HTTPError as exc:
            await self._refuse(send, call, *_failure(exc, "body", call.provider))
            return
        try:
            body, call.usage = provider.translate_response(body, call)
        except MissingUsage as missing:
            call.usage = Usage(prompt_tokens(call), answer_tokens(missing.payload))
            call.usage_estimated = True
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
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
        self,
        receive: Receive,
        send: Send,
        call: Call,
        response: httpx.Response,
        relay: _Relay,
    ) -> None:
        splitter = EventSplitter()
        error = b""
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
                async for data in response.aiter_bytes():
                    out = relay.relay(splitter.feed(data))
                    if out and not await _send_body(send, call, out):
                        break
            except httpx.HTTPError as exc:
                _, code, message = _failure(exc, "stream", call.provider)
                call.fail(code, message)
                # The status line is gone; an `error` chunk is what OpenAI SDKs raise on.
                error = encode(
                    {"error": {"message": message, "type": "upstream_error", "code": code}}
                )
            group.cancel_scope.cancel()
        if not call.client_gone:
            await _send_body(send, call, relay.finish(splitter.flush(), error), more=False)
        if call.usage is None:
            # Cut off (by the client or the provider) or never reported: bill what was
            # delivered, marked as estimated, rather than give the stream away.
            call.usage = estimate_stream(call)
            call.usage_estimated = True


class _Relay(Protocol):
    def relay(self, events: list[bytes]) -> bytes: ...

    def finish(self, tail: bytes, error: bytes) -> bytes: ...


class _PassThrough:
    """Same protocol on both sides: events go through as they are, tapped for usage."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.wants_usage = _wants_usage(call)

    def relay(self, events: list[bytes]) -> bytes:
        return _tap(events, self.call, self.wants_usage)

    def finish(self, tail: bytes, error: bytes) -> bytes:
        if error:
            return error  # an unfinished event before it would garble both
        # The provider sent its own `data: [DONE]`; an event it left unterminated is
        # still read for usage and closed properly.
        return self.relay([tail + b"\n\n"]) if tail.strip() else b""


class _Translated:
    """Another protocol upstream: its events become OpenAI chunks, then usage and [DONE]."""

    def __init__(
        self, call: Call, translator: StreamTranslator, scrub: Callable[[str], str]
    ) -> None:
        self.call = call
        self.translator = translator
        self.scrub = scrub
        self.wants_usage = _wants_usage(call)
        self.chunk_id = f"chatcmpl-{call.id}"

    def relay(self, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            try:
                items = self.translator.feed(event)
            except (TypeError, ValueError, KeyError, AttributeError, IndexError):
                message = f"Provider '{self.call.provider}' sent an event the hub cannot read."
                items = [{"error": {"message": message, "type": "upstream_error"}}]
            for item in items:
                if item.get("choices"):
                    self.call.delivered_chunks += 1
                if "error" in item:
                    message = self.scrub(str(item["error"].get("message")))
                    item["error"]["message"] = message
                    item["error"]["code"] = "upstream_error"
                    self.call.fail("upstream_error", message)
                out.append(encode(item))
        if self.translator.usage is not None:
            self.call.usage = self.translator.usage
        return b"".join(out)

    def finish(self, tail: bytes, error: bytes) -> bytes:
        out = self.relay([tail]) if tail.strip() and not error else b""
        if error or self.call.error_code is not None:
            return out + error
        if self.wants_usage and self.call.usage is not None:
            out += encode(usage_chunk(self.call, self.chunk_id, self.call.usage))
        return out + b"data: [DONE]\n\n"


MAX_ATTEMPTS = 3


async def _body(response: httpx.Response) -> bytes:
    """An error response's body, or nothing if even that fails to arrive."""
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""


def _about_credential(status: int, body: bytes) -> bool:
    """Whether a 401/402/403 is about the hub's key (not content policy or region)."""
    if status != 403:
        return True
    text = body.decode("utf-8", "replace").lower()
    return any(word in text for word in ("key", "auth", "credential", "permission_denied"))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


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
        if b'"delta"' in event:
            call.delivered_chunks += 1
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
