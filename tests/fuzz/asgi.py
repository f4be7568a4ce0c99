"""Requests handed to the hub as a server would hand them, with nothing cleaned up first.

An HTTP client would refuse to send much of what the fuzz test sends (invalid
percent-encoding, NUL in a query, a header of raw bytes), so requests go to the ASGI app
directly, as uvicorn builds them: the path percent-decoded, the query and headers as bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import unquote

from starlette.types import ASGIApp, Message

CHUNK = 64 * 1024  # bodies arrive in pieces, as from a socket
HANG_SECONDS = 30.0


@dataclass(frozen=True)
class Request:
    method: str
    raw_path: bytes  # percent-encoded ASCII, as on the wire
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    route: str  # the route template this request was made for, to group failures by
    auth: str  # who sends it: admin, user, admin-cookie, user-cookie, none, garbage

    def describe(self, longest: int = 300) -> str:
        """The request in one line, long values cut, to show in a failure report."""

        def cut(data: bytes) -> str:
            text = repr(data)
            return text if len(text) <= longest else f"{text[:longest]}…({len(data)} bytes)"

        headers = " ".join(f"{k.decode()}={cut(v)}" for k, v in self.headers)
        query = f"?{self.query.decode('latin-1')}" if self.query else ""
        path = cut(self.raw_path + query.encode("latin-1"))
        return f"{self.method} {path} as {self.auth} [{headers}] body={cut(self.body)}"

    @property
    def size(self) -> int:
        return len(self.raw_path) + len(self.query) + len(self.body) + len(self.headers)


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raised: BaseException | None = None  # what the app let escape, as a server would log


async def send(app: ASGIApp, request: Request) -> Answer:
    """Send the request to the app and collect the answer; an escaped exception is a 500,
    as uvicorn would answer it; no answer within HANG_SECONDS is a hang."""
    path = unquote(request.raw_path.decode("ascii"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": request.raw_path,
        "query_string": request.query,
        "root_path": "",
        "headers": list(request.headers),
        "client": ("127.0.0.1", 50000),
        "server": ("hub.test", 80),
        "state": {},
    }
    pieces = [request.body[i : i + CHUNK] for i in range(0, len(request.body), CHUNK)] or [b""]
    answered = asyncio.Event()
    answer = Answer()

    async def receive() -> Message:
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        await answered.wait()  # the client stays until the answer is complete
        return {"type": "http.disconnect"}

    async def collect(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in message.get("headers", [])
            }
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")
            if not message.get("more_body", False):
                answered.set()

    try:
        await asyncio.wait_for(app(scope, receive, collect), HANG_SECONDS)
    except TimeoutError as exc:
        answer.raised = exc
        answer.status = answer.status or 504
    except Exception as exc:
        answer.raised = exc
        answer.status = answer.status or 500
    finally:
        answered.set()
    return answer
