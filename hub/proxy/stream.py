"""A streamed answer: the provider's SSE events relayed to the client as they arrive,
and billed for what was delivered however the stream ends."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.types import Send

from hub.dialects.base import ClientFormat, Relay, speaks_natively
from hub.providers.base import Adapter
from hub.proxy.connect import failure_of
from hub.proxy.relay import Converted, OpenAISource, TranslatedSource, ensure_usage
from hub.proxy.whole import Pricer, send_body
from hub.sse import EventSplitter
from middleware.call import Call

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Tell nginx-like front proxies not to hold chunks back.
    (b"x-accel-buffering", b"no"),
]


def relay_for(
    call: Call, provider: Adapter, fmt: ClientFormat, scrub: Callable[[str], str]
) -> Relay:
    """Pass-through when the provider speaks the client's format; else normalized chunks
    (read as they are from an OpenAI-compatible provider, or by its adapter's translator)
    rendered by the client's format."""
    if speaks_natively(fmt, provider):
        return fmt.native_stream(call, scrub)
    source = (
        OpenAISource(call)
        if provider.passthrough
        else TranslatedSource(call, provider.stream_translator(call))
    )
    return Converted(call, source, fmt.stream(call), scrub)


async def stream(
    send: Send,
    call: Call,
    response: httpx.Response,
    relay: Relay,
    kind: str | None,
    fmt: ClientFormat,
    pricer: Pricer,
) -> None:
    """Relay the stream; `kind` is the provider's, which counts the prompt of an estimate."""
    splitter = EventSplitter()
    error: tuple[str, str] | None = None
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*STREAM_HEADERS, (b"x-request-id", call.request_id.encode())],
        }
    )
    try:
        try:
            async for data in response.aiter_bytes():
                out = relay.relay(splitter.feed(data))
                if out and not await send_body(send, call, out):
                    return
        except httpx.HTTPError as exc:
            _, code, message = failure_of(exc, "stream", call.provider)
            call.fail(code, message)
            error = (code, message)
        tail = b"" if error else relay.flush(splitter.flush())
    finally:
        # However the stream ended (cut off, failed, hung up on, or whole), what it
        # delivered is what it is billed for.
        ensure_usage(call, complete=error is None and relay.complete, kind=kind)
    credits = await pricer(call) if fmt.shows_credits else 0
    await send_body(send, call, tail + relay.close(error, credits), more=False)
