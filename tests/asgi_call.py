"""Driving an ASGI app with a hand-made scope: headers no HTTP client would send (a Host of
`[`, bytes past ASCII), and bodies whose reading a test watches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    messages: list[Message] = field(default_factory=list)

    def error(self) -> dict[str, Any]:
        """The hub's JSON error, checked to have its shape."""
        assert self.headers.get("content-type") == "application/json", self
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "code", "param"}, error
        return error


class Body:
    """A request body sent in chunks, counting how much of it the app asked for."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.received = 0

    async def messages(self) -> AsyncIterator[Message]:
        while self.received < self.total:
            size = min(self.chunk, self.total - self.received)
            self.received += size
            yield {"type": "http.request", "body": b"x" * size, "more_body": True}
        yield {"type": "http.request", "body": b"", "more_body": False}


def http_scope(
    method: str, path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    names = {name for name, _ in headers or ()}
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [*([] if b"host" in names else [(b"host", b"hub.test")]), *(headers or [])],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | Body = b"",
) -> Answer:
    """One request through `app`; an exception the app raises reaches the test."""
    answer = Answer()
    chunks = body.messages() if isinstance(body, Body) else _whole(body)

    async def receive() -> Message:
        async for message in chunks:
            return message
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        answer.messages.append(message)
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode("latin-1") for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    await app(http_scope(method, path, query, headers), receive, send)
    return answer


async def _whole(body: bytes) -> AsyncIterator[Message]:
    yield {"type": "http.request", "body": body, "more_body": False}
