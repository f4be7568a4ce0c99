"""The ModelCall middleware: every call is opened, watched and settled, whatever happens."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

import middleware.model_call
from middleware.call import Call, Identity
from middleware.model_call import ModelCallMiddleware
from middleware.parse import CallMiddleware
from tests.conftest import USER

pytestmark = pytest.mark.anyio


class FlakyLog:
    """A call log whose settle fails a number of times before it works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.opened: list[str] = []
        self.settled: list[Call] = []

    async def open_call(self, call: Call) -> None:
        self.opened.append(call.id)

    async def settle(self, call: Call) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database went away")
        self.settled.append(call)


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def explode(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("bug in the app")


def stack(app: object, log: FlakyLog) -> httpx.AsyncClient:
    wrapped = CallMiddleware(
        ModelCallMiddleware(app, log=log),  # type: ignore[arg-type]
        routes={"/v1/chat/completions": "chatCompletion"},
        anonymous=Identity(account_id=1, user_did=USER),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t")


BODY = {"model": "m", "messages": []}


async def test_a_settle_that_fails_for_a_moment_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(middleware.model_call, "SETTLE_RETRY_PAUSES", (0.0, 0.0, 0.0))
    log = FlakyLog(failures=2)
    async with stack(answer, log) as client:
        response = await client.post("/v1/chat/completions", json=BODY)

    assert response.status_code == 200
    [call] = log.settled
    assert call.status == "success" and log.opened == [call.id]


async def test_an_answer_whose_charge_cannot_be_written_is_not_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(middleware.model_call, "SETTLE_RETRY_PAUSES", (0.0, 0.0))
    log = FlakyLog(failures=10)  # the database stays away through every retry
    sent: list[Message] = []
    app = stack(answer, log)._transport.app  # type: ignore[attr-defined]
    body = json.dumps(BODY).encode()

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    await app(scope, receive, send)

    # The last bytes of the answer are withheld (the server then cuts the connection):
    # the client has no whole answer the ledger does not hold.
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert log.settled == [] and len(log.opened) == 1


async def test_an_app_that_raises_gives_a_json_500_and_a_failed_record() -> None:
    log = FlakyLog(failures=0)
    async with stack(explode, log) as client:
        response = await client.post("/v1/chat/completions", json=BODY)

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    [call] = log.settled
    assert call.status == "failed" and call.error_code == "internal_error"
