"""A client that stops reading: the proxy cuts the exchange after client_send_timeout, once,
and bills what the provider reported when the answer was already whole.

The proxy is driven directly with ASGI callables, so a send can be made to wait for ever
exactly where a client that stopped reading would leave it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Message

from hub.providers.registry import ProviderRegistry
from hub.proxy import Proxy
from hub.settings import ProviderSettings
from middleware.billing import price
from middleware.call import CALL_KEY, Call, Identity
from middleware.ports import Rate

pytestmark = pytest.mark.anyio

LIMIT = 0.2
TIMEOUTS = {"connect": 1.0, "read": 5.0, "write": 5.0, "pool": 1.0}


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def proxy_for(stream: httpx.AsyncByteStream) -> Proxy:
    class Upstream(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    provider = ProviderSettings("mock", "openai", "http://up.test/v1", ("sk-0123456789ab",))
    registry = ProviderRegistry({"mock": provider}, TIMEOUTS)
    return Proxy(registry, Upstream(), client_send_timeout=LIMIT)


def streamed_call() -> tuple[Call, dict[str, Any]]:
    call = Call(
        identity=Identity(account_id=1, user_did="did:abt:u"),
        call_type="chatCompletion",
        model="mock/m",
        body={"model": "mock/m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        raw_body=b"",
        stream=True,
    )
    return call, {"type": "http", "method": "POST", "path": "/v1/chat/completions", CALL_KEY: call}


class Bytes(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes, endless: bool = False, slow_close: bool = False) -> None:
        self.chunks = chunks
        self.endless = endless
        self.slow_close = slow_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        while self.endless:
            yield self.chunks[-1]
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        if self.slow_close:  # a transport whose close really awaits
            await asyncio.sleep(0.05)


async def never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_whole_answer_whose_last_piece_waits_keeps_the_reported_usage() -> None:
    # Indented code: the hub's estimate of it (chars / 4) is well above the real count.
    code = "            return x\n" * 20
    whole = Bytes(
        event({"id": "c", "choices": [{"index": 0, "delta": {"content": code}}]}),
        event({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        event({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 60}}),
        b"data: [DONE]\n\n",
    )
    call, scope = streamed_call()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            await asyncio.Event().wait()  # the client stopped reading at the very end

    with anyio.fail_after(5):
        await proxy_for(whole)(scope, never, send)

    assert call.error_code == "client_too_slow"
    assert call.usage is not None and not call.usage_estimated
    assert (call.usage.input_tokens, call.usage.output_tokens) == (5, 60)
    rate = Rate("mock/m", "chatCompletion", input_rate=1, output_rate=1)
    assert price(call.usage, rate) == 65


@pytest.mark.parametrize("slow_close", [False, True])
async def test_a_hang_up_just_after_the_timeout_cuts_once_and_raises_nothing(
    slow_close: bool,
) -> None:
    chunk = event({"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]})
    call, scope = streamed_call()
    sent = 0

    async def send(message: Message) -> None:
        nonlocal sent
        sent += 1
        if sent > 3:
            await asyncio.Event().wait()  # the client stopped reading...

    async def receive() -> Message:
        await asyncio.sleep(LIMIT + 0.01)  # ...and hangs up just after the deadline
        return {"type": "http.disconnect"}

    with anyio.fail_after(5):
        await proxy_for(Bytes(chunk, endless=True, slow_close=slow_close))(scope, receive, send)

    assert call.error_code == "client_too_slow" and call.client_gone
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # no cancel left behind
