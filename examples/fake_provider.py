"""A small fake provider, to try the hub (and test it) with no real key.

It speaks the OpenAI API, and also Anthropic Messages (POST /v1/messages) and Gemini
(POST /v1beta/models/{model}:generateContent / :streamGenerateContent, and Imagen's
:predict), see fake_protocols.py, and the Responses API (POST /v1/responses), see
fake_responses.py.

    python examples/fake_provider.py --port 8100 [--keep-alive 5]

It answers /v1/chat/completions (streaming or not), /v1/embeddings and
/v1/images/generations. Token counts are words, so usage is predictable. The model name
steers it, for trying tools and failure paths:
    tools-...        calls the first tool offered with `{"city": "Paris"}`, unless the last
                     message is a tool's result (then it answers)
    error-<status>   answers that HTTP status with an OpenAI-style error
    slow-...         waits 0.2 s between stream chunks
    stall-...        sends one chunk, then stalls for a minute
    long-<n>         streams n chunks
    big-<megabytes>  streams that many MiB of content, in 16 KiB chunks, as fast as the
                     reader takes them (each send awaits the server's flow control)
    hang-...         never answers: holds the request open until the client goes away
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from starlette.types import Receive, Scope, Send

try:
    from examples import fake_protocols, fake_responses
except ImportError:  # run as a script: examples/ itself is on the path
    import fake_protocols  # type: ignore[no-redef]
    import fake_responses  # type: ignore[no-redef]

REPLY = "Hello! I am a fake model, answering from 127.0.0.1 with predictable usage."
# The content of one `big-` chunk: large enough that 50 MiB is a few thousand events.
BIG_CHUNK = "x" * 16384
# How long `stall-` and `hang-` hold on before giving up on the client going away.
STALL_SECONDS = 60.0


def count_words(messages: Any) -> int:
    total = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(
                len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict)
            )
    return total


class FakeProvider:
    """An ASGI app; `requests` and `closed_early` let tests see what the hub sent and did,
    and `answer_delay` makes every whole chat answer take that long, as a real model's does.

    `disconnected_at` holds the time.monotonic() at which each request still being answered
    saw its client (the hub) go away, as soon as the server reported it; `stream_bytes` counts
    the bytes of the content chunks handed to the server, so a test can see how far ahead of
    a reader the provider got.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.closed_early = 0
        self.closed_at: list[float] = []
        self.disconnected_at: list[float] = []
        self.stream_bytes = 0
        # Seconds every whole (not streamed) chat answer takes, like a real model's latency.
        self.answer_delay = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = json.loads(body or b"{}")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"path": scope["path"], "body": payload, "headers": headers})
        model = str(payload.get("model", ""))
        if model.startswith("hang-"):
            await self._hang(receive, send)
        elif model.startswith("error-"):
            status = int(model.split("-")[1])
            await _json(
                send,
                status,
                {"error": {"message": f"fake error {status}", "type": "fake", "code": None}},
            )
        elif scope["path"].endswith("/responses"):
            await fake_responses.responses(payload, send)
        elif scope["path"].endswith("/messages"):
            await fake_protocols.anthropic(payload, send)
        elif ":generateContent" in scope["path"] or ":streamGenerateContent" in scope["path"]:
            await fake_protocols.gemini(scope["path"], payload, send)
        elif scope["path"].endswith(":predict"):
            await fake_protocols.imagen(payload, send)
        elif scope["path"].endswith("/chat/completions"):
            await self._chat(payload, receive, send)
        elif scope["path"].endswith("/embeddings"):
            inputs = payload.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            tokens = sum(len(str(i).split()) for i in items)
            data = [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                for i in range(len(items))
            ]
            await _json(
                send,
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            )
        elif scope["path"].endswith("/images/generations"):
            n = int(payload.get("n", 1))
            await _json(
                send,
                200,
                {
                    "created": int(time.time()),
                    "data": [{"url": f"http://127.0.0.1/fake/{i}.png"} for i in range(n)],
                },
            )
        else:
            await _json(send, 404, {"error": {"message": "no such route", "type": "fake"}})

    async def _hang(self, receive: Receive, send: Send) -> None:
        """A provider that accepted the request and then never answered."""
        try:
            await asyncio.wait_for(self._disconnect(receive), STALL_SECONDS)
        except TimeoutError:
            await _json(send, 504, {"error": {"message": "fake hang ended", "type": "fake"}})
            return
        self.closed_early += 1
        self.closed_at.append(time.monotonic())

    async def _disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected_at.append(time.monotonic())

    async def _chat(self, payload: dict[str, Any], receive: Receive, send: Send) -> None:
        model = str(payload.get("model", ""))
        prompt = count_words(payload.get("messages"))
        words = REPLY.split()
        if model.startswith("long-"):
            words = ["w"] * int(model.split("-")[1].split("/")[0])
        # Each stream chunk's content: the words, spaced, or a big model's 16 KiB blocks.
        pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
        if model.startswith("big-"):
            megabytes = int(model.split("-")[1].split("/")[0])
            pieces = [BIG_CHUNK] * (megabytes * 1024 * 1024 // len(BIG_CHUNK))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces),
            "total_tokens": prompt + len(pieces),
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        tools = (payload.get("tools") or []) if model.startswith("tools-") else []
        if tools and not fake_protocols.answers_tool(payload.get("messages")):
            name = str((tools[0].get("function") or {}).get("name", ""))
            stream = bool(payload.get("stream"))
            include = (payload.get("stream_options") or {}).get("include_usage") is True
            await _tool_call(send, model, name, usage, stream, include)
            return
        if not payload.get("stream"):
            if self.answer_delay:
                await asyncio.sleep(self.answer_delay)
            await _json(
                send,
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "".join(pieces)},
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        gone = asyncio.Event()

        async def watch() -> None:
            await self._disconnect(receive)
            gone.set()

        watcher = asyncio.create_task(watch())
        include_usage = (payload.get("stream_options") or {}).get("include_usage") is True
        delay = 0.2 if model.startswith("slow-") else 0.0
        try:
            for text in pieces:
                if gone.is_set():
                    self.closed_early += 1
                    self.closed_at.append(time.monotonic())
                    return
                sent = await _event(send, _chunk(model, {"content": text}, None, include_usage))
                self.stream_bytes += sent
                if model.startswith("stall-"):
                    await asyncio.wait_for(gone.wait(), STALL_SECONDS)
                    continue
                if delay:
                    try:
                        await asyncio.wait_for(gone.wait(), delay)
                    except TimeoutError:
                        pass
            await _event(send, _chunk(model, {}, "stop", include_usage))
            if include_usage:
                await _event(
                    send,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    },
                )
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        finally:
            watcher.cancel()


async def _tool_call(
    send: Send, model: str, name: str, usage: dict[str, Any], stream: bool, include_usage: bool
) -> None:
    """A call to tool `name` with `{"city": "Paris"}`: five output tokens, as on the other
    protocols' sides."""
    usage = {**usage, "completion_tokens": 5, "total_tokens": usage["prompt_tokens"] + 5}
    call = {"id": "call_fake", "type": "function", "function": {"name": name, "arguments": ""}}
    parts = ['{"city":', ' "Paris"}']
    if not stream:
        call["function"]["arguments"] = "".join(parts)
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        choice = {"index": 0, "finish_reason": "tool_calls", "message": message}
        body = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model}
        await _json(send, 200, {**body, "choices": [choice], "usage": usage})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    await _event(
        send,
        _chunk(model, {"role": "assistant", "tool_calls": [{"index": 0, **call}]}, None, False),
    )
    for part in parts:
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
        await _event(send, _chunk(model, delta, None, False))
    await _event(send, _chunk(model, {}, "tool_calls", False))
    if include_usage:
        last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
        await _event(send, {**last, "created": 0, "choices": [], "usage": usage})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def _chunk(model: str, delta: dict[str, Any], finish: str | None, usage: bool) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = None
    return chunk


async def _event(send: Send, payload: dict[str, Any]) -> int:
    data = b"data: " + json.dumps(payload).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": data, "more_body": True})
    return len(data)


async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = FakeProvider()

if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=5,
        help="seconds before an idle connection is closed (uvicorn's default: 5)",
    )
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_keep_alive=args.keep_alive,
    )
