"""Whole-body answers (and the few helpers every answer uses): read the provider's body,
read its usage, render it in the client's format, send it with its length."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from starlette.types import Send

from hub.dialects.base import ClientFormat, speaks_natively
from hub.estimate import answer_usage
from hub.providers.base import Adapter
from hub.proxy.connect import failure_of
from middleware.call import Call
from middleware.errors import send_error

Pricer = Callable[[Call], Awaitable[int]]


async def refuse(send: Send, call: Call, status: int, code: str, message: str) -> None:
    """Fail the call and answer with the error (in the client's format: see send_error)."""
    call.fail(code, message)
    await send_error(send, status, code, message)


async def send_body(send: Send, call: Call, body: bytes, more: bool = True) -> bool:
    try:
        await send({"type": "http.response.body", "body": body, "more_body": more})
    except OSError:  # servers on ASGI spec 2.4 raise here when the client has gone
        call.client_gone = True
        return False
    return True


async def read_all(response: httpx.Response) -> bytes:
    """The whole body. Plain bodies (we ask for identity) skip httpx's decoder layers."""
    if response.headers.get("content-encoding", "identity") != "identity":
        return await response.aread()
    return b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]


async def whole(
    send: Send,
    call: Call,
    response: httpx.Response,
    provider: Adapter,
    fmt: ClientFormat,
    pricer: Pricer,
) -> None:
    try:
        body = await read_all(response)
    except httpx.HTTPError as exc:
        await refuse(send, call, *failure_of(exc, "body", call.provider))
        return
    try:
        body = await _rendered(call, body, provider, fmt, pricer)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        call.usage = None  # the client gets no answer, so it pays for none
        call.usage_estimated = False
        await refuse(
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
    await send_body(send, call, body, more=False)


async def _rendered(
    call: Call, body: bytes, provider: Adapter, fmt: ClientFormat, pricer: Pricer
) -> bytes:
    """The answer in the client's format, with `call.usage` set from it."""
    native = speaks_natively(fmt, provider)
    if native:
        body, usage = fmt.native_answer(call, body)
    else:
        body, usage = provider.translate_response(body, call)
    if usage is None:
        # A valid answer without usage: estimated, rather than billed as nothing.
        usage = answer_usage(call, provider.kind, body)
        call.usage_estimated = True
    call.usage = usage  # before pricing, for formats that show the credits
    if native:
        return body
    credits = await pricer(call) if fmt.shows_credits else 0
    return fmt.answer(call, body, credits)
