"""The outbox: ledger rows copied by the database, delivered by the lease holder, signed,
retried with backoff, and summed into reports that each count a row once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import httpx
import pytest
import respx

from hub.metrics import Metrics
from hub.outbox.backoff import retry_delay
from hub.outbox.config import OutboxSettings, SinkSettings
from hub.outbox.dispatcher import Dispatcher
from hub.outbox.signing import headers
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.outbox import OutboxStore
from hub.store.raw import Exec, Operation
from middleware.money import credits_text, to_units
from tests.conftest import USER
from tests.hub.test_store import a_call

pytestmark = pytest.mark.anyio

SECRET_BYTES = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
HOOK = "http://sink.test/hook"
BOB = "did:abt:bob"


def webhook(**changes: object) -> SinkSettings:
    values: dict[str, object] = {"name": "hook", "kind": "webhook", "url": HOOK, "secret": SECRET}
    return SinkSettings(**{**values, **changes})  # type: ignore[arg-type]


def settings(*sinks: SinkSettings) -> OutboxSettings:
    return OutboxSettings(
        sinks=sinks, retry_base_seconds=2.0, retry_max_seconds=60.0, summed_grace_seconds=0.0
    )


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def dispatcher(
    store: SqlStore, outbox: OutboxSettings, clock: Callable[[], float], holder: str = "a"
) -> Dispatcher:
    return Dispatcher(OutboxStore(store), outbox, holder=lambda: holder, clock=clock)


async def spend(store: SqlStore, did: str, *charges: int) -> None:
    account = await Admin(store).ensure_account(did)
    for charge in charges:
        call = a_call(account, charge)
        call.identity = call.identity.__class__(account_id=account, user_did=did)
        await store.settle(call)


def verify(request: httpx.Request) -> dict[str, object]:
    """The Standard Webhooks check, computed here from the scheme, not the hub's code."""
    msg_id = request.headers["webhook-id"]
    stamp = request.headers["webhook-timestamp"]
    signed = f"{msg_id}.{stamp}.".encode() + request.content
    expected = base64.b64encode(hmac.new(SECRET_BYTES, signed, hashlib.sha256).digest())
    assert request.headers["webhook-signature"] == "v1," + expected.decode()
    body: dict[str, object] = json.loads(request.content)
    assert body["id"] == msg_id
    return body


def test_a_signature_is_the_standard_webhooks_hmac_of_id_timestamp_and_body() -> None:
    body = b'{"id":"mev_1"}'
    made = headers(SECRET_BYTES, "mev_1", 1700000000, body)
    digest = hmac.new(SECRET_BYTES, b"mev_1.1700000000." + body, hashlib.sha256).digest()
    assert made == {
        "webhook-id": "mev_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    # Another id, time or body signs differently: a receiver can tell each apart.
    assert headers(SECRET_BYTES, "mev_2", 1700000000, body) != made


def test_retries_wait_twice_as_long_each_time_up_to_the_cap() -> None:
    delays = [retry_delay(n, 2.0, 60.0) for n in range(1, 8)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert retry_delay(10_000, 2.0, 60.0) == 60.0  # no overflow after a long outage


async def test_every_ledger_row_is_in_the_outbox_and_only_if_it_committed(
    store: SqlStore,
) -> None:
    admin = Admin(store)
    await admin.grant(USER, to_units(3), "top-up")
    await spend(store, USER, 100, 250)

    def rolled_back() -> Operation[None]:
        account = yield from admin._account_id(USER)
        yield Exec(
            store.sql.insert_grant, {"p_id": account, "p_amount": 7, "p_note": None, "p_now": 1.0}
        )
        raise RuntimeError("the grant's transaction fails after its insert")

    with pytest.raises(RuntimeError):
        await store.run(rolled_back)

    rows = await OutboxStore(store).listing(everything=True, limit=10)
    assert sorted((r["kind"], r["amount"]) for r in rows) == [
        ("grant", to_units(3)),
        ("meter_event", 100),
        ("meter_event", 250),
    ]
    assert {r["state"] for r in rows} == {"unenrolled"}


async def test_signed_events_are_delivered_once_and_failures_retried_with_backoff(
    store: SqlStore,
) -> None:
    await Admin(store).grant(USER, to_units(1))
    await spend(store, USER, 100)
    clock = Clock()
    metrics = Metrics()
    hub = Dispatcher(
        OutboxStore(store), settings(webhook()), holder=lambda: "a", observer=metrics, clock=clock
    )
    received: list[dict[str, object]] = []
    answers = iter([500, 200])

    def answer(request: httpx.Request) -> httpx.Response:
        body = verify(request)
        status = next(answers, 200) if body["type"] == "grant" else 200
        if status == 200:
            received.append(body)
        return httpx.Response(status)

    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(HOOK).mock(side_effect=answer)
        assert await hub.round() == 2
        [failing] = await OutboxStore(store).listing(everything=False, limit=10)
        assert failing["kind"] == "grant" and failing["state"] == "failing"
        assert failing["attempts"] == 1 and failing["last_error"] == "HTTP 500"
        assert failing["next_at"] == pytest.approx(clock.now + 2.0)
        assert await hub.round() == 0  # not due before its backoff
        clock.now += 2.0
        assert await hub.round() == 1
        assert await hub.round() == 0  # nothing left: nothing sent twice
        await hub.client.aclose()

    assert route.call_count == 3
    [charge] = [b for b in received if b["type"] == "meter_event"]
    assert charge["account"] == USER and charge["amount"] == credits_text(100)
    assert charge["units"] == 100 and charge["model"] == "mock/gpt-4o-mini"
    assert isinstance(charge["call_id"], str) and str(charge["id"]).startswith("mev_")
    [grant] = [b for b in received if b["type"] == "grant"]
    assert grant["amount"] == "1" and grant["units"] == to_units(1)
    assert await OutboxStore(store).listing(everything=False, limit=10) == []
    text = metrics.render()
    assert 'aigne_hub_outbox_deliveries_total{sink="hook"} 2' in text
    assert 'aigne_hub_outbox_failures_total{sink="hook"} 1' in text
    assert "# TYPE aigne_hub_outbox_pending gauge" in text
    assert 'aigne_hub_outbox_pending{sink="hook"} 0' in text


async def test_one_dispatcher_delivers_until_its_lease_expires_then_another_takes_over(
    store: SqlStore,
) -> None:
    clock = Clock()
    outbox = OutboxSettings(sinks=(webhook(),), lease_seconds=30.0)
    first, second = dispatcher(store, outbox, clock, "a"), dispatcher(store, outbox, clock, "b")
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(HOOK).respond(200)
        await Admin(store).grant(USER, 5)
        assert await first.round() == 1
        await Admin(store).grant(USER, 6)
        assert await second.round() == 0 and not second.leading  # "a" holds the lease
        clock.now += 29.0
        assert await second.round() == 0  # still "a"'s, though it has gone quiet
        clock.now += 2.0  # "a" died: its lease expired
        assert await second.round() == 1 and second.leading
        assert await first.round() == 0 and not first.leading  # back, but no longer holder
        await second.stop()  # a clean stop releases the lease: no wait for the next one
        await Admin(store).grant(USER, 7)
        assert await first.round() == 1
        await first.client.aclose()
    assert [json.loads(r.request.content)["units"] for r in route.calls] == [5, 6, 7]


async def test_a_slow_sink_never_keeps_a_round_past_half_the_lease(store: SqlStore) -> None:
    for amount in (1, 2, 3):
        await Admin(store).grant(USER, amount)
    clock = Clock()
    outbox = OutboxSettings(sinks=(webhook(),), lease_seconds=20.0, timeout=10.0, concurrency=1)
    hub = dispatcher(store, outbox, clock)

    def slow(request: httpx.Request) -> httpx.Response:
        clock.now += 11.0  # past half the lease: nothing more is started this round
        return httpx.Response(200)

    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(HOOK).mock(side_effect=slow)
        await hub.round()
        assert route.call_count == 1
        waiting = await OutboxStore(store).listing(everything=False, limit=10)
        # The others were not tried (nor counted as failed): due at the next round.
        assert [(r["state"], r["attempts"]) for r in waiting] == [("pending", 0)] * 2
        await hub.round()
        await hub.round()
        await hub.client.aclose()
    assert [json.loads(r.request.content)["units"] for r in route.calls] == [1, 2, 3]
