"""The credit check: no credit, no call — and nothing recorded for it."""

from __future__ import annotations

import asyncio

import anyio
import httpx
import pytest
import respx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.store import SqlStore
from hub.store.admin import Admin
from middleware.billing import BillingMiddleware
from middleware.call import Call, Identity, Usage, get_call
from middleware.credit import CreditCheckMiddleware
from middleware.model_call import ModelCallMiddleware
from middleware.money import to_units
from middleware.parse import CallMiddleware
from middleware.ports import InsufficientCredit, Rate
from tests.conftest import USER, Hub, make_settings, start_hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("balance", ["0", "-0.5"])
async def test_zero_or_negative_balance_is_a_402_with_no_call(
    hub: Hub, mock_upstream: respx.MockRouter, balance: str
) -> None:
    route = mock_upstream.post("/chat/completions").respond(json=completion())
    await hub.admin.grant(USER, to_units(balance) - to_units(10))

    response = await hub.chat()

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert await hub.calls() == []
    assert not route.called


async def test_unpriced_model_is_refused_not_given_away(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    route = mock_upstream.post("/chat/completions").respond(json=completion())

    response = await hub.chat(model="mock/gpt-5-unpriced")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_priced"
    assert not route.called and await hub.calls() == []


async def test_self_hosted_mode_records_calls_at_zero_credits(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(10, 5))
    hub = await start_hub(
        make_settings(db_url, mode="self-hosted"), httpx.MockTransport(mock_upstream.async_handler)
    )
    try:
        await hub.admin.grant(USER, -to_units(10))  # no credit at all: billing is off

        response = await hub.chat(model="mock/any-unpriced-model")

        assert response.status_code == 200
        [call] = await hub.calls()
        assert call["status"] == "success" and call["credits"] == 0
        assert call["input_tokens"] == 10
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


async def test_a_concurrent_burst_cannot_spend_far_beyond_the_balance(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.05)  # all 30 calls are in flight together
        return httpx.Response(200, json=completion(100, 100))

    mock_upstream.post("/chat/completions").mock(side_effect=slow)
    per_call = 100 * 10_000 + 100 * 20_000  # 0.0003 credits at the hub fixture's rates
    await hub.admin.grant(USER, 3 * per_call - to_units(10))  # room for three calls

    # A prompt of ~100 tokens, as the upstream will report.
    messages = [{"role": "user", "content": "word " * 80}]

    responses = await asyncio.gather(
        *(hub.chat(max_tokens=100, messages=messages) for _ in range(30))
    )

    statuses = [r.status_code for r in responses]
    # Without holds all 30 would pass the check and the balance would end at -27 calls.
    assert statuses.count(200) == 3 and statuses.count(402) == 27
    ledger = await hub.admin.ledger(USER)
    assert ledger["balance"] == 0
    assert ledger["balance"] == ledger["granted"] - ledger["metered"]


async def test_the_402_says_what_calls_in_flight_hold(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    started = anyio.Event()
    release = anyio.Event()

    async def held_open(request: httpx.Request) -> httpx.Response:
        started.set()
        await release.wait()
        return httpx.Response(200, json=completion(1, 1))

    mock_upstream.post("/chat/completions").mock(side_effect=held_open)
    await hub.admin.grant(USER, to_units("0.001") - to_units(10))

    async with anyio.create_task_group() as group:
        group.start_soon(hub.chat)
        await started.wait()
        refused = await hub.chat()
        release.set()

    assert refused.status_code == 402
    assert "held by calls in flight" in refused.json()["error"]["message"]


def test_worst_case_covers_the_asked_output_and_every_image() -> None:
    from middleware.call import Call, Identity
    from middleware.credit import worst_case

    def call(kind: str, body: dict[str, object]) -> Call:
        return Call(
            identity=Identity(1, USER),
            call_type=kind,
            model="m",  # type: ignore[arg-type]
            body=body,
            raw_body=b"x" * 400,
        )

    chat = Rate("m", "chatCompletion", input_rate=1, output_rate=10)
    assert worst_case(call("chatCompletion", {"max_tokens": 50}), chat, 4096) == 101 + 500
    assert worst_case(call("chatCompletion", {}), chat, 4096) == 101 + 40_960
    assert worst_case(call("embedding", {"max_tokens": 50}), chat, 4096) == 101
    image = Rate("m", "imageGeneration", input_rate=0, output_rate=0, image_rate=7)
    assert worst_case(call("imageGeneration", {"n": 3}), image, 4096) == 21


class _Ledger:
    """In-memory ports: one rate, and a CallLog that admits as the store does (against
    the balance less what is held), holding credit until the settle charges the call."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.held: dict[str, int] = {}
        self.recorded: list[str] = []

    async def rate(self, model: str, call_type: str) -> Rate:
        return Rate(model, "chatCompletion", input_rate=1, output_rate=1)

    async def open_call(self, call: Call) -> None:
        held = sum(self.held.values())
        if call.hold is not None:
            if self.balance - held <= 0:
                raise InsufficientCredit(self.balance, held)
            self.held[call.id] = call.hold
        self.recorded.append(call.id)

    async def settle(self, call: Call) -> None:
        self.held.pop(call.id, None)
        self.balance -= call.charge or 0


def _stack(app: ASGIApp, ledger: _Ledger) -> httpx.AsyncClient:
    wrapped = CallMiddleware(
        CreditCheckMiddleware(
            ModelCallMiddleware(BillingMiddleware(app), log=ledger), rates=ledger
        ),
        routes={"/v1/chat/completions": "chatCompletion"},
        anonymous=Identity(account_id=1, user_did=USER),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t")


BODY = {"model": "m", "messages": [], "max_tokens": 10}


async def test_a_refused_call_reaches_nothing_and_says_what_is_held() -> None:
    reached: list[str] = []
    release = anyio.Event()
    started = anyio.Event()

    async def model(scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        assert call is not None
        reached.append(call.id)
        started.set()
        await release.wait()
        call.usage = Usage(1, 1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    ledger = _Ledger(balance=5)  # less than one hold (about 20 units)
    client = _stack(model, ledger)

    async def first() -> None:
        await client.post("/v1/chat/completions", json=BODY)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        await started.wait()
        refused = await client.post("/v1/chat/completions", json=BODY)
        release.set()
    await client.aclose()

    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "insufficient_credits"
    assert "held by calls in flight" in error["message"]
    assert len(reached) == 1 and len(ledger.recorded) == 1
    assert ledger.held == {} and ledger.balance == 3  # charged 2, the hold released


async def test_the_charge_is_settled_before_the_answer_ends() -> None:
    ledger = _Ledger(balance=100)
    at_end: list[tuple[int, dict[str, int]]] = []

    async def model(scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        assert call is not None
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        call.usage = Usage(3, 4)  # known before the last message, as the proxy does
        await send({"type": "http.response.body", "body": b"}"})

    stack = _stack(model, ledger)._transport.app  # type: ignore[attr-defined]

    async def server(scope: Scope, receive: Receive, send: Send) -> None:
        async def to_client(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                at_end.append((ledger.balance, dict(ledger.held)))
            await send(message)

        await stack(scope, receive, to_client)

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=server), base_url="http://t")
    response = await client.post("/v1/chat/completions", json=BODY)
    await client.aclose()

    assert response.status_code == 200 and response.content == b"{}"
    # When the client gets the last byte, the charge (3 + 4) is in and the hold is gone.
    assert at_end == [(93, {})]


async def test_credit_granted_elsewhere_counts_at_once(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion())
    await hub.admin.grant(USER, -to_units(10))
    assert (await hub.chat()).status_code == 402  # the empty balance is now cached

    # Another process (the CLI) grants credit: this store's cache knows nothing of it.
    other = SqlStore(hub.store.url)
    await other.open()
    await Admin(other).grant(USER, to_units(1))
    await other.close()

    assert (await hub.chat()).status_code == 200
