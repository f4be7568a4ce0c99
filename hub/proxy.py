"""The thin streaming reverse proxy: one request upstream, the answer back as it arrives."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx
from starlette.types import Message, Receive, Scope, Send

from hub.dialects import aigne
from hub.estimate import answer_usage, estimate_stream
from hub.priced_fields import refused_field
from hub.providers.base import Adapter, StreamTranslator, usage_chunk
from hub.providers.openai import error_message, usage_from
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


class Proxy:
    """The ASGI app behind the middlewares for the model routes."""

    def __init__(
        self,
        registry: ProviderRegistry,
        transport: httpx.AsyncBaseTransport,
        pricer: Callable[[Call], Awaitable[int]] | None = None,
        client_send_timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        # How long one piece of the answer may wait for the client to take it: a client that
        # stops reading but keeps its socket open would otherwise hold the upstream
        # connection, and its credit hold, for as long as it likes.
        self.client_send_timeout = client_send_timeout
        # What a finished call costs, for client formats that show it in the answer (AIGNE);
        # the charge itself is still made by the billing layer.
        self.pricer = pricer or _free
        # The transport, not an AsyncClient: the client's cookie, redirect and auth machinery
        # is all behaviour a proxy must not have, and cost a sixth of the hub's CPU.
        self.transport = transport

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
        providers = self.registry.route(call.model, call.provider)
        for provider in providers:
            refused = refused_field(call, provider.kind)
            if refused is not None:
                param, why = refused
                message = f"'{param}' is not allowed through this hub: {why}."
                call.fail("unsupported_parameter", message)
                await send_error(send, 400, "unsupported_parameter", message, param)
                return
        # A hung-up client is only visible through receive(): a watcher task waits on it and,
        # if the client leaves mid-exchange, cancels the exchange, which closes the upstream
        # request at once so the provider stops generating.
        task = asyncio.current_task()
        assert task is not None
        watch = _Watch(call, task, receive, self.client_send_timeout)
        clock = watch.loop.time

        async def send_in_time(message: Message) -> None:
            # Two stores a send: the watch's one timer does the checking (see _Watch).
            watch.send_started = clock()
            try:
                await send(message)
            finally:
                watch.send_started = None

        try:
            await self._exchange(send_in_time, call, providers)
        except asyncio.CancelledError:
            if not watch.cancelled or task.uncancel() > 0:
                raise  # cancelled by someone else too
        finally:
            watch.stop()
        if call.client_gone and call.usage is None and call.sent_upstream:
            # Hung up on after the provider had the prompt, before an answer or a stream
            # began (a started stream billed itself as it ended): the provider bills the
            # prompt, so the caller pays for it too.
            _ensure_usage(call, complete=False, kind=self._kind(call))

    async def _exchange(self, send: Send, call: Call, providers: list[Adapter]) -> None:
        connected = await self._connect(call, providers)
        if isinstance(connected, _Failure):
            if connected.upstream_body is not None:
                await self._upstream_error(send, call, connected.status, connected.upstream_body)
            else:
                await self._refuse(send, call, connected.status, connected.code, connected.message)
            return
        response, provider = connected
        try:
            if call.stream and call.call_type == "chatCompletion":
                await self._stream(send, call, response, self._relay(call, provider))
            else:
                await self._whole(send, call, response, provider)
        finally:
            # Also when the client left: closing the socket is what stops the provider.
            await response.aclose()

    async def _connect(
        self, call: Call, providers: list[Adapter]
    ) -> tuple[httpx.Response, Adapter] | _Failure:
        """An upstream that answered, and which one; or why none did.

        A model named without a provider may be served by several: when one fails before
        answering in a way another might not (it is down, throttled, or lacks the call
        type), the next one is tried.
        """
        failure = _Failure(404, "unknown_model", f"The model '{call.model}' is not served.")
        for provider in providers:
            call.provider = provider.name
            if not provider.supports(call.call_type):
                message = f"Provider '{provider.name}' does not offer {call.call_type} calls."
                failure = _Failure(400, "unsupported_call_type", message, retry=True)
                continue
            result = await self._send(call, provider)
            if isinstance(result, httpx.Response):
                return result, provider
            failure = result
            if not result.retry:
                break
        return failure

    async def _send(self, call: Call, provider: Adapter) -> httpx.Response | _Failure:
        """The provider's answer, trying its credentials in turn.

        A connection failure, a timeout, a 429, a 5xx, a refused key (as the adapter reads
        the provider's answer) or a key the transport cannot send, before the first byte,
        moves on to the next credential (at most MAX_ATTEMPTS, each logged and counted on
        the call); the pool learns from each answer.
        """
        tried: list[Credential] = []
        failure = _Failure(502, "upstream_unavailable", "No credential could be tried.", True)
        while len(tried) < MAX_ATTEMPTS:
            credential = provider.pool.pick(tried)
            if credential is None:
                break
            tried.append(credential)
            call.attempts += 1
            call.credential = credential.masked
            try:
                request = provider.build_request(call, credential)
            except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
                # A request the OpenAI format allows in shape but not in detail (a tool call
                # that is not an object, say) cannot be translated for this provider.
                logger.info("cannot translate call %s for %s: %r", call.id, provider.name, exc)
                return _Failure(
                    400,
                    "invalid_request",
                    f"The request could not be translated for provider '{provider.name}': "
                    "check the shape of messages, tools and content parts.",
                )
            call.sent_upstream = True
            try:
                response = await self.transport.handle_async_request(request)
            except httpx.HTTPError as exc:
                # Only a request that never reached the provider is safe to send again: one
                # that timed out or broke after going out may be running (and billed) there.
                unsent = isinstance(
                    exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
                )
                failure = _Failure(*_failure(exc, "request", provider.name), retry=unsent)
                self._attempt_failed(call, credential, failure.code)
                if not unsent:
                    return failure
                continue
            except (ValueError, TypeError) as exc:
                # Refused before it went out (a header value the transport will not write):
                # nothing of the caller's goes into the headers, so it is this key's doing,
                # and the next key or provider is tried rather than the call failed.
                provider.pool.cannot_send(credential)
                self._attempt_failed(call, credential, f"key not sendable ({type(exc).__name__})")
                message = f"Provider '{provider.name}' has no key the hub can send."
                failure = _Failure(502, "upstream_auth_failed", message, retry=True)
                continue
            status = response.status_code
            if 200 <= status < 300:
                provider.pool.succeeded(credential)
                return response
            body = await _body(response)
            await response.aclose()
            if _refuses_key(provider, status, body):
                provider.pool.refused(credential)
            elif status == 429 or status >= 500:
                # Judged on recent health: the key that just failed gets less traffic for a
                # while, whether it was throttled or its side of the provider is struggling.
                provider.pool.rate_limited(credential, _retry_after(response))
            elif status != 408:
                # The request itself is at fault: another key would get the same answer.
                return _Failure(status, "upstream_error", "", upstream_body=body)
            self._attempt_failed(call, credential, f"HTTP {status}")
            failure = _Failure(status, "upstream_error", "", retry=True, upstream_body=body)
        return failure

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
        # Read afresh (error paths only): keys stored in the database join after start-up.
        for secret in self.registry.secrets():
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        return text

    async def _upstream_error(self, send: Send, call: Call, status: int, body: bytes) -> None:
        name = call.provider
        message = self._scrub(error_message(body)) if body else "no message"
        if _refuses_key(self.registry.get(str(name)), status, body):
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
            body, usage = provider.translate_response(body, call)
            if usage is None:
                # A valid answer without usage: estimated, rather than billed as nothing.
                usage = answer_usage(call, provider.kind, body)
                call.usage_estimated = True
            if call.dialect == "aigne":
                body = await self._aigne_answer(call, body, usage)
            call.usage = usage
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            call.usage = None  # the client gets no answer, so it pays for none
            call.usage_estimated = False
            await self._refuse(
                send,
                call,
                502,
                "upstream_invalid_response",
                f"Provider '{call.provider}' answered with something the hub cannot read.",
            )
            return
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", call.request_id.encode()),
            ],
        }
        try:
            await send(start)
        except OSError:  # servers on ASGI spec 2.4 raise here when the client has gone
            call.client_gone = True  # billed all the same: its usage is in
            return
        await _send_body(send, call, body, more=False)

    async def _aigne_answer(self, call: Call, body: bytes, usage: Usage) -> bytes:
        result = json.loads(body)
        call.usage = usage  # priced before the answer goes out, as it shows the credits
        credits = await self.pricer(call)
        if call.call_type == "imageGeneration":
            return json.dumps(aigne.image_answer(call, result, credits)).encode()
        return json.dumps(aigne.answer(call, result, credits)).encode()

    async def _stream(
        self, send: Send, call: Call, response: httpx.Response, relay: _Relay
    ) -> None:
        splitter = EventSplitter()
        error: tuple[str, str] | None = None
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_STREAM_HEADERS, (b"x-request-id", call.request_id.encode())],
            }
        )
        try:
            try:
                async for data in response.aiter_bytes():
                    out = relay.relay(splitter.feed(data))
                    if out and not await _send_body(send, call, out):
                        return
            except httpx.HTTPError as exc:
                _, code, message = _failure(exc, "stream", call.provider)
                call.fail(code, message)
                error = (code, message)
            tail = b"" if error else relay.flush(splitter.flush())
        finally:
            # However the stream ended (cut off, failed, hung up on, or whole), what it
            # delivered is what it is billed for.
            _ensure_usage(call, complete=error is None and relay.complete, kind=self._kind(call))
        credits = await self.pricer(call) if call.dialect != "openai" else 0
        await _send_body(send, call, tail + relay.close(error, credits), more=False)

    def _kind(self, call: Call) -> str | None:
        """The protocol of the provider the call went to, which counts its prompt."""
        provider = self.registry.providers.get(call.provider or "")
        return provider.kind if provider is not None else None

    def _relay(self, call: Call, provider: Adapter) -> _Relay:
        if call.dialect == "openai" and provider.passthrough:
            return _PassThrough(call, self._scrub)
        source = (
            _OpenAISource(call)
            if provider.passthrough
            else _TranslatedSource(call, provider.stream_translator(call))
        )
        render = _AigneRender(call) if call.dialect == "aigne" else _OpenAIRender(call)
        return _Converted(call, source, render, self._scrub)


class _Relay(Protocol):
    """Turns upstream stream events into what the client's format expects."""

    @property
    def complete(self) -> bool:
        """The upstream said its answer was over ([DONE], a stop reason): usage it reported
        is final. Usage reported before that (Anthropic's message_start) may be partial."""
        ...

    def relay(self, events: list[bytes]) -> bytes: ...

    def flush(self, tail: bytes) -> bytes:
        """Whatever the upstream left unterminated, at a normal end."""
        ...

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        """The stream's last bytes: an error in the client's format, or its proper end."""
        ...


class _PassThrough:
    """OpenAI on both sides: events go through as they are, tapped for usage."""

    def __init__(self, call: Call, scrub: Callable[[str], str]) -> None:
        self.call = call
        self.scrub = scrub
        self.wants_usage = _wants_usage(call)
        self.done = False

    @property
    def complete(self) -> bool:
        return self.done

    def relay(self, events: list[bytes]) -> bytes:
        if events and b"[DONE]" in events[-1]:
            self.done = True
        return _tap(events, self.call, self.wants_usage, self.scrub)

    def flush(self, tail: bytes) -> bytes:
        # An event the provider left unterminated is still read for usage, and closed.
        return self.relay([tail + b"\n\n"]) if tail.strip() else b""

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        return _openai_error(*error) if error else b""  # the provider sent its own [DONE]


class _OpenAISource:
    """OpenAI stream events as chunk objects (for a client that speaks another format)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.finished = False

    def feed(self, event: bytes) -> list[dict[str, Any]]:
        payload = json_data(event)
        if not isinstance(payload, dict):
            self.finished = self.finished or b"[DONE]" in event
            return []
        usage = usage_from(payload, self.call.call_type)
        if usage is not None:
            self.call.usage = usage
        return [payload]


class _TranslatedSource:
    """Another protocol's events as OpenAI chunk objects, by the provider's translator."""

    def __init__(self, call: Call, translator: StreamTranslator) -> None:
        self.call = call
        self.translator = translator

    @property
    def finished(self) -> bool:
        return self.translator.finished

    def feed(self, event: bytes) -> list[dict[str, Any]]:
        items = self.translator.feed(event)
        if self.translator.usage is not None:
            self.call.usage = self.translator.usage
        return items


class _Converted:
    """Events read into OpenAI chunk objects, then written in the client's format."""

    def __init__(
        self,
        call: Call,
        source: _OpenAISource | _TranslatedSource,
        render: _OpenAIRender | _AigneRender,
        scrub: Callable[[str], str],
    ) -> None:
        self.call = call
        self.source = source
        self.render = render
        self.scrub = scrub

    @property
    def complete(self) -> bool:
        return self.source.finished

    def relay(self, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            try:
                out.append(self._one(event))
            except (TypeError, ValueError, KeyError, AttributeError, IndexError):
                # An event the hub cannot read (or render) ends the answer with an error the
                # client's format understands, rather than cutting the connection.
                message = f"Provider '{self.call.provider}' sent an event the hub cannot read."
                self.call.fail("upstream_error", message)
                out.append(self.render.error("upstream_error", message))
        return b"".join(out)

    def _one(self, event: bytes) -> bytes:
        out = []
        chunks: list[dict[str, Any]] = []
        for item in self.source.feed(event):
            if isinstance(item.get("error"), dict):
                message = self.scrub(str(item["error"].get("message")))
                self.call.fail("upstream_error", message)
                out.append(self.render.chunks(chunks))
                out.append(self.render.error("upstream_error", message))
                chunks = []
                continue
            if item.get("choices"):
                self.call.delivered_chunks += 1
                self.call.delivered_chars += _delta_chars(item)
            chunks.append(item)
        out.append(self.render.chunks(chunks))
        return b"".join(out)

    def flush(self, tail: bytes) -> bytes:
        return self.relay([tail]) if tail.strip() else b""

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        if error:
            return self.render.error(*error)
        if self.call.error_code is not None:
            return b""  # the error went out already, as it arrived
        return self.render.close(credits)


class _OpenAIRender:
    def __init__(self, call: Call) -> None:
        self.call = call
        self.wants_usage = _wants_usage(call)

    def chunks(self, chunks: list[dict[str, Any]]) -> bytes:
        return b"".join(encode(c) for c in chunks if c.get("choices") or self.wants_usage)

    def error(self, code: str, message: str) -> bytes:
        return _openai_error(code, message)

    def close(self, credits: int) -> bytes:
        out = b""
        if self.wants_usage and self.call.usage is not None:
            out = encode(usage_chunk(self.call, f"chatcmpl-{self.call.id}", self.call.usage))
        return out + b"data: [DONE]\n\n"


class _AigneRender:
    def __init__(self, call: Call) -> None:
        self.stream = aigne.AigneStream(call)

    def chunks(self, chunks: list[dict[str, Any]]) -> bytes:
        return self.stream.render(chunks)

    def error(self, code: str, message: str) -> bytes:
        return self.stream.error(message)

    def close(self, credits: int) -> bytes:
        return self.stream.close(credits)


def _openai_error(code: str, message: str) -> bytes:
    # The status line is gone; an `error` chunk is what OpenAI SDKs raise on.
    return encode({"error": {"message": message, "type": "upstream_error", "code": code}})


MAX_ATTEMPTS = 3


@dataclass(slots=True)
class _Failure:
    """Why no upstream answered: the hub's own error, or a provider's error answer."""

    status: int
    code: str
    message: str
    retry: bool = False  # another provider might do better
    upstream_body: bytes | None = None  # a provider's error body, mapped by _upstream_error


def _delta_chars(chunk: dict[str, Any]) -> int:
    delta = (chunk["choices"][0] or {}).get("delta") or {}
    chars = len(delta.get("content") or "")
    for tool in delta.get("tool_calls") or []:
        chars += len((tool.get("function") or {}).get("arguments") or "")
    return chars


def _ensure_usage(call: Call, complete: bool, kind: str | None) -> None:
    """Bill a stream for what it delivered, estimated and marked so, rather than give it
    away: when no usage was reported (cut off, hung up on, or a provider that reports
    none), or when the stream ended early and its reported output (which may be partial)
    is below it. The prompt is counted the way provider `kind` counts it."""
    if call.usage is not None and complete:
        return
    estimate = estimate_stream(call, kind)
    if call.usage is None:
        call.usage = estimate
    elif estimate.output_tokens > call.usage.output_tokens:
        call.usage = replace(call.usage, output_tokens=estimate.output_tokens)
    else:
        return
    call.usage_estimated = True


async def _free(call: Call) -> int:
    return 0


async def _body(response: httpx.Response) -> bytes:
    """An error response's body, or nothing if even that fails to arrive."""
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""


def _refuses_key(provider: Adapter, status: int, body: bytes) -> bool:
    """Whether an error answer is about the hub's key rather than the caller's request: the
    adapter reads it from the provider's status and error type or code, never from words in
    the message (which may echo the caller's text: "my monkey" would bench keys)."""
    return 400 <= status < 500 and status != 408 and provider.refuses_key(status, body)


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


def _tap(
    events: Iterable[bytes], call: Call, wants_usage: bool, scrub: Callable[[str], str]
) -> bytes:
    """Pass events through, noting usage; drop the usage-only chunk if it was not asked for;
    an error event fails the call, its message scrubbed of provider keys."""
    kept: list[bytes] = []
    for event in events:
        if b'"error"' in event:
            payload = json_data(event)
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                message = scrub(str(payload["error"].get("message", "upstream error")))
                call.fail("upstream_error", message)
                kept.append(_openai_error("upstream_error", message))
                continue
        if b'"delta"' in event:
            call.delivered_chunks += 1
            call.delivered_bytes += len(event)
            if not call.smallest_chunk or len(event) < call.smallest_chunk:
                call.smallest_chunk = len(event)
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


# The watcher starts this long after the exchange does. A task per request (even plain
# asyncio; an anyio task group cost more than the rest of the request path together) was
# a tenth of the hub's throughput on fast answers, which are done before a hang-up could
# matter; model calls last far longer, and a hang-up is still seen well within 100 ms.
WATCH_AFTER = 0.02


class _Watch:
    """Watches an exchange under way for a client that hangs up (receive() says so) or
    stops reading (a send to it waits longer than `send_limit`)."""

    def __init__(
        self, call: Call, task: asyncio.Task[Any], receive: Receive, send_limit: float
    ) -> None:
        self.call = call
        self.task = task
        self.active = True  # the exchange is under way (reset with no await in between)
        self.cancelled = False
        self.watcher: asyncio.Task[None] | None = None
        self.send_limit = send_limit
        # When the send under way began (loop time), None between sends.
        self.send_started: float | None = None
        self.send_timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(WATCH_AFTER, self._start, receive)

    def _start(self, receive: Receive) -> None:
        # Only exchanges that outlast WATCH_AFTER get a watcher task and a send timer: a
        # timer per send cost 2% of a short call's CPU.
        if self.active:
            self.watcher = self.loop.create_task(self.run(receive))
            began = self.send_started
            due = (began if began is not None else self.loop.time()) + self.send_limit
            self.send_timer = self.loop.call_at(due, self._check_send)

    def _check_send(self) -> None:
        if not self.active:
            return
        began = self.send_started
        now = self.loop.time()
        if began is not None and now - began >= self.send_limit:
            self.too_slow()
            return
        # Look again when the send under way (or one starting now) would be over the limit.
        due = (began if began is not None else now) + self.send_limit
        self.send_timer = self.loop.call_at(due, self._check_send)

    def too_slow(self) -> None:
        """The client took nothing of the answer for `send_limit` seconds: end the exchange
        as if it had hung up (the upstream request is closed, what was delivered is billed)."""
        # Also on the last piece of the answer: a client that stops reading there would
        # otherwise hold the exchange as long as any other.
        if self.active and not self.cancelled:
            limit = self.send_limit
            message = f"The client read nothing for {limit:g} s; the answer was cut off."
            self.call.fail("client_too_slow", message)
            self._cut()

    def _cut(self) -> None:
        # Once only (both callers check `cancelled`): a second cancel, a hang-up just after
        # a timeout, would escape the proxy as an error.
        self.call.client_gone = True
        self.cancelled = True
        self.task.cancel()

    def stop(self) -> None:
        self.active = False
        self.timer.cancel()
        if self.send_timer is not None:
            self.send_timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()

    async def run(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                # Servers also report a disconnect once the whole answer is sent: only one
                # before that is a client hanging up.
                if self.active and not self.cancelled and not self.call.answered:
                    self._cut()
                return
