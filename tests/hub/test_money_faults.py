"""The money code under injected faults, on SQLite and PostgreSQL: a batch of the group
committer that fails whole, a settle that keeps failing, a connection that drops in the
middle of a batch, records the database would refuse. Each test checks what a user would
notice: every answered call recorded and charged once, no credit held for nothing, the
client told plainly, and the balance equal to the ledger."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import select
from starlette.types import Message, Receive, Scope, Send

import middleware.model_call
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.raw import Bulk, Outcome, Work
from hub.store.schema import accounts
from middleware.billing import BillingMiddleware
from middleware.call import Identity, Usage, get_call
from middleware.credit import CreditCheckMiddleware
from middleware.model_call import ModelCallMiddleware
from middleware.money import to_units
from middleware.parse import CallMiddleware
from tests.conftest import USER
from tests.hub.test_store import a_call

pytestmark = pytest.mark.anyio

MODEL = "mock/priced"
PER_CALL = 3 * 10 + 4 * 100  # 3 prompt tokens at 10, 4 output tokens at 100 (units)
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


async def funded(store: SqlStore) -> int:
    admin = Admin(store)
    account = await admin.ensure_account(USER)
    await admin.grant(USER, to_units(1))
    await admin.set_rate(MODEL, "chatCompletion", input_rate=10, output_rate=100)
    return account


def _client(
    store: SqlStore, account: int, app: Callable[..., Awaitable[None]]
) -> httpx.AsyncClient:
    """The hub's money layers, in the hub's order, on the store, around `app`."""
    stack = CallMiddleware(
        CreditCheckMiddleware(ModelCallMiddleware(BillingMiddleware(app), log=store), rates=store),
        routes={"/v1/chat/completions": "chatCompletion"},
        anonymous=Identity(account_id=account, user_did=USER),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=stack), base_url="http://t")


def _answering(inside: anyio.Event | None = None, wanted: int = 1) -> Any:
    """A model app answering 3 + 4 tokens; with `inside`, it answers once `wanted` calls
    are in (so their settles meet in one batch)."""
    arrived = 0
    go = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal arrived
        call = get_call(scope)
        assert call is not None
        arrived += 1
        if inside is not None:
            if arrived == wanted:
                inside.set()
                go.set()
            await go.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        call.usage = Usage(3, 4)
        await send({"type": "http.response.body", "body": b'{"answer": "hi"}'})

    return app


def fail_batches(
    store: SqlStore,
    fault: BaseException,
    times: int,
    *,
    opens: bool = False,
    after_commit: bool = False,
) -> list[int]:
    """Make the next `times` batches holding a settle (or, with `opens`, any batch) fail
    whole, as a connection that fails under the group committer does (`after_commit`:
    once the batch is committed, as a connection lost before the acknowledgement); returns
    the number of settles in each batch failed."""
    backend = store._backend
    assert backend is not None
    real = backend.run_batch
    failed: list[int] = []

    async def run_batch(batch: Sequence[Work]) -> list[Outcome]:
        settles = [w for w in batch if isinstance(w, Bulk) and w.stmt is store.sql.settle_call]
        if (settles or opens) and len(failed) < times:
            failed.append(len(settles))
            if after_commit:
                await real(batch)
            raise fault
        return await real(batch)

    backend.run_batch = run_batch  # type: ignore[method-assign]
    return failed


async def books_of(store: SqlStore) -> dict[str, Any]:
    """What the operator sees: the ledger, the credit still held, and the calls' records."""
    admin = Admin(store)
    held = await store.query(select(accounts.c.held))
    calls = await admin.list_calls(limit=1000)
    return {
        "ledger": await admin.ledger(USER),
        "held": int(held[0]["held"]),
        "calls": sorted((c["status"], int(c["credits"]), c["error_code"]) for c in calls),
    }


def balanced(books: dict[str, Any], charged_calls: int) -> None:
    ledger = books["ledger"]
    assert ledger["metered"] == charged_calls * PER_CALL
    assert (
        ledger["balance"]
        == ledger["granted"] - ledger["metered"]
        == to_units(1) - (charged_calls * PER_CALL)
    )
    assert books["held"] == 0  # no credit held by a call that is over


# -- a store that does not answer when a call opens --------------------------------------


@pytest.mark.parametrize("rates_cached", [True, False], ids=["at-the-open", "at-the-rate"])
async def test_a_call_the_store_cannot_record_is_refused_plainly_and_not_made(
    store: SqlStore, rates_cached: bool
) -> None:
    account = await funded(store)
    if rates_cached:  # the store fails at the admission; else at the rate's lookup
        await store.rate(MODEL, "chatCompletion")
    fail_batches(store, ConnectionResetError("the database went away"), times=1, opens=True)
    reached: list[str] = []

    async def model(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append("upstream")

    async with _client(store, account, model) as client:
        refused = await client.post("/v1/chat/completions", json=BODY)

    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "store_unavailable"
    assert "nothing was charged" in refused.json()["error"]["message"]
    assert reached == []  # nothing went upstream that could not be recorded
    books = await books_of(store)
    assert books["calls"] == [] and books["held"] == 0
    assert books["ledger"]["balance"] == to_units(1)


# -- a batch that fails whole -------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "after_commit"),
    [
        (ConnectionResetError("connection reset by peer"), False),
        (sqlite3.OperationalError("disk I/O error"), False),
        # Committed, but the caller hears of a failure: the retry must not charge again.
        (ConnectionResetError("connection lost before the commit was acknowledged"), True),
    ],
    ids=["connection", "disk", "lost-acknowledgement"],
)
async def test_a_settle_batch_that_fails_whole_is_retried_and_each_call_charged_once(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch, fault: BaseException, after_commit: bool
) -> None:
    monkeypatch.setattr(middleware.model_call, "SETTLE_RETRY_PAUSES", (0.01, 0.01, 0.01))
    account = await funded(store)
    failed = fail_batches(store, fault, times=2, after_commit=after_commit)
    inside = anyio.Event()
    answers: list[httpx.Response] = []

    async with _client(store, account, _answering(inside, wanted=4)) as client:

        async def one() -> None:
            answers.append(await client.post("/v1/chat/completions", json=BODY))

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)

    assert failed and sum(failed) >= 4  # every call's settle met the fault at least once
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"answer": "hi"})] * 4
    books = await books_of(store)
    assert books["calls"] == [("success", PER_CALL, None)] * 4
    balanced(books, charged_calls=4)


# -- a settle that keeps failing --------------------------------------------------------


async def test_a_settle_that_keeps_failing_withholds_the_answer_and_keeps_the_hold(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(middleware.model_call, "SETTLE_RETRY_PAUSES", (0.0, 0.0))
    account = await funded(store)
    fail_batches(store, ConnectionResetError("the database went away"), times=3)
    sent: list[Message] = []
    stack = _client(store, account, _answering())._transport.app  # type: ignore[attr-defined]
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
    await stack(scope, receive, send)

    # The client never gets the end of an answer the ledger does not hold (the server
    # cuts the connection) ...
    assert [m["type"] for m in sent] == ["http.response.start"]
    # ... and the call is not lost: recorded `processing`, its worst case still held, so
    # the account cannot spend that credit twice, until the recovery settles it.
    books = await books_of(store)
    assert [status for status, _, _ in books["calls"]] == ["processing"]
    assert books["held"] > 0
    assert books["ledger"]["balance"] == books["ledger"]["granted"] == to_units(1)


# -- a connection that drops in the middle of a batch ---------------------------------


class _DropsOnce:
    """The store's connection, which drops (or, SQLite, fails) once in the middle of a
    batch: after the batch's first statements, at its first run of settles."""

    def __init__(self, real: Any, store: SqlStore) -> None:
        self._real = real
        self._store = store
        self.dropped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def executemany(self, sql: str, args: Any) -> Any:
        if not self.dropped and sql == self._store.sql.settle_call.sql:
            self.dropped = True
            if self._store.is_sqlite:
                raise sqlite3.OperationalError("disk I/O error")
            return self._drop()
        return self._real.executemany(sql, args)

    async def _drop(self) -> None:
        self._real.terminate()  # as a server restart or a network cut does
        raise ConnectionResetError("connection was closed in the middle of operation")


async def test_a_connection_dropped_mid_batch_loses_and_doubles_nothing(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(middleware.model_call, "SETTLE_RETRY_PAUSES", (0.01, 0.01))
    account = await funded(store)
    backend: Any = store._backend
    attribute = "_conn" if store.is_sqlite else "conn"
    drops = _DropsOnce(getattr(backend, attribute), store)
    setattr(backend, attribute, drops)
    # Other calls opening meanwhile (in the batch, or the next): they must come through.
    others = [a_call(account, PER_CALL) for _ in range(3)]
    for other in others:
        other.status, other.charge = "processing", None
    inside = anyio.Event()
    answers: list[httpx.Response] = []

    async with _client(store, account, _answering(inside, wanted=3)) as client:

        async def one() -> None:
            answers.append(await client.post("/v1/chat/completions", json=BODY))

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(one)
            await inside.wait()
            for other in others:
                group.start_soon(store.open_call, other)

    assert drops.dropped
    assert [a.status_code for a in answers] == [200] * 3
    books = await books_of(store)
    assert books["calls"] == sorted(
        [("success", PER_CALL, None)] * 3 + [("processing", 0, None)] * 3
    )
    assert books["ledger"]["metered"] == 3 * PER_CALL
    assert books["ledger"]["balance"] == to_units(1) - 3 * PER_CALL
