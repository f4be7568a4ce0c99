"""The hub's middlewares in front of an app that is not the hub: a tiny echo model.

    python examples/mount_middlewares.py

The echo app is plain Starlette: it knows nothing of keys, credits or call records. It
reads its request as usual and reports what it used with `get_call(scope).usage`; the
stack around it answers 401 without a key and 402 without credits, records every call and
bills it at the model's rate, in a SQLite file (`mounted-example.db`). Run it, then paste
the curl command it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from hub.store import SqlStore
from hub.store.admin import Admin
from middleware import (
    AuthMiddleware,
    BillingMiddleware,
    CallMiddleware,
    CallType,
    CreditCheckMiddleware,
    ModelCallMiddleware,
    Usage,
    error_body,
    get_call,
)
from middleware.money import to_units

DATABASE_URL = "sqlite:///mounted-example.db"
HOST = "127.0.0.1"
PORT = 8200
MODEL = "echo/echo-1"
DEMO_USER = "did:abt:demo"
ROUTES: dict[str, CallType] = {"/v1/chat/completions": "chatCompletion"}


def count_words(text: str) -> int:
    return len(text.split())


def _texts(messages: list[Any], role: str | None = None) -> list[str]:
    """The string contents of the messages (of one role, if given), in order."""
    return [
        m["content"]
        for m in messages
        if isinstance(m, dict)
        and isinstance(m.get("content"), str)
        and (role is None or m.get("role") == role)
    ]


async def chat_completions(request: Request) -> Response:
    # CallMiddleware has already read and checked the body; it replays it to us unchanged,
    # so the app reads its request like any other.
    body = await request.json()
    if body.get("stream"):
        # Answering JSON to a streaming request would break the client's SSE parser.
        return Response(
            error_body(400, "stream_unsupported", "The echo model does not stream.", "stream"),
            status_code=400,
            media_type="application/json",
        )
    messages: list[Any] = body["messages"]
    user_texts = _texts(messages, "user")
    answer = user_texts[-1] if user_texts else ""
    prompt_tokens = sum(count_words(text) for text in _texts(messages))
    completion_tokens = count_words(answer)
    call = get_call(request.scope)
    if call is not None:
        # The one thing the app tells the stack: BillingMiddleware prices this usage after
        # the response, and ModelCallMiddleware records it with the charge.
        call.usage = Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens)
    return JSONResponse(
        {
            "id": f"chatcmpl-{call.id if call else 'echo'}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": answer},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def build_app(database_url: str) -> tuple[ASGIApp, SqlStore]:
    """The echo app behind the full stack, and its store.

    The Starlette app's lifespan opens and closes the store; the middlewares pass lifespan
    events through untouched, so uvicorn runs it as is. Without a lifespan (httpx's
    ASGITransport), open and close the returned store yourself.
    """
    store = SqlStore(database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    echo = Starlette(
        routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])],
        lifespan=lifespan,
    )
    # Built inside out: the first middleware a request meets is the last one wrapped.
    app: ASGIApp = BillingMiddleware(echo)
    app = ModelCallMiddleware(app, log=store)
    app = CreditCheckMiddleware(app, rates=store)
    app = CallMiddleware(app, routes=ROUTES)
    app = AuthMiddleware(app, keys=store, accounts=store)
    return app, store


async def seed(database_url: str) -> str:
    """A fresh key for the demo user, one more credit, and the echo model's rate."""
    store = SqlStore(database_url)
    await store.open()
    try:
        admin = Admin(store)
        _, key = await admin.create_key(DEMO_USER, name="mount example")
        await admin.grant(DEMO_USER, to_units(1), "mount example")
        # 1 credit per million words in, 2 out, like a small real model. An echo costs a
        # sliver of the grant, and so does the worst case the credit check may hold for a
        # call until it is settled.
        await admin.set_rate(
            MODEL,
            "chatCompletion",
            input_rate=to_units("0.000001"),
            output_rate=to_units("0.000002"),
        )
    finally:
        await store.close()
    return key


def main() -> None:
    import uvicorn

    key = asyncio.run(seed(DATABASE_URL))
    app, _ = build_app(DATABASE_URL)
    body = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hello echo"}}]}}'
    print(f"Echo model behind the hub's middlewares on http://{HOST}:{PORT}; try:\n")
    print(
        f"curl http://{HOST}:{PORT}/v1/chat/completions "
        f'-H "Authorization: Bearer {key}" '
        f"-H 'content-type: application/json' -d '{body}'\n",
        flush=True,
    )
    uvicorn.run(app, host=HOST, port=PORT, log_level="warning")


if __name__ == "__main__":
    main()
