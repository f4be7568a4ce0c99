"""Stripe billing meter events, and summed reports that count each outbox row once."""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from hub.outbox.config import SinkSettings
from hub.outbox.dispatcher import report_id
from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.outbox import OutboxStore
from middleware.money import credits_text, to_units
from tests.conftest import USER
from tests.hub.test_outbox import BOB, HOOK, Clock, dispatcher, settings, spend, verify, webhook

pytestmark = pytest.mark.anyio

STRIPE_KEY = "sk_test_outbox_0123456789"
STRIPE = "http://stripe.test"


async def _with_stripe_customers(store: SqlStore) -> None:
    """accounts.stripe_customer_id comes with the payments migration; added here if this
    database predates it, as that migration does."""
    try:
        await store.database.execute("SELECT stripe_customer_id FROM accounts")
    except Exception:
        await store.database.execute(
            "ALTER TABLE accounts ADD COLUMN stripe_customer_id VARCHAR(255)"
        )
    account = await Admin(store).ensure_account(USER)
    await store.database.execute(
        f"UPDATE accounts SET stripe_customer_id = 'cus_alice' WHERE id = {account}"
    )


STRIPE_SINK = SinkSettings(
    name="stripe",
    kind="stripe",
    url=STRIPE,
    secret=STRIPE_KEY,
    events=("meter_event",),
    event_name="aigne_credits",
)


async def test_stripe_gets_meter_events_of_accounts_with_a_customer_and_others_wait(
    store: SqlStore,
) -> None:
    await _with_stripe_customers(store)
    await Admin(store).grant(USER, to_units(1))  # grants do not go to a meter
    await spend(store, USER, 1500)
    await spend(store, BOB, 700)
    hub = dispatcher(store, settings(STRIPE_SINK), Clock())
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(f"{STRIPE}/v1/billing/meter_events").respond(200, json={})
        assert await hub.round() == 2
        await hub.client.aclose()
    with respx.mock(assert_all_called=False) as mock:  # a refusal says Stripe's reason
        refusal = {"error": {"message": "No such customer: 'cus_alice'"}}
        mock.post(f"{STRIPE}/v1/billing/meter_events").respond(400, json=refusal)
        await spend(store, USER, 900)
        hub = dispatcher(store, settings(STRIPE_SINK), Clock())
        await hub.round()
        await hub.client.aclose()
    [request] = route.calls
    form = {k: v[0] for k, v in parse_qs(request.request.content.decode()).items()}
    assert request.request.headers["authorization"] == f"Bearer {STRIPE_KEY}"
    assert form["event_name"] == "aigne_credits"
    assert form["payload[stripe_customer_id]"] == "cus_alice"
    assert form["payload[value]"] == credits_text(1500)
    assert form["identifier"].startswith("mev_") and int(form["timestamp"]) > 0
    assert request.request.headers["idempotency-key"] == form["identifier"]
    refused, waiting = await OutboxStore(store).listing(everything=False, limit=10)
    assert refused["last_error"] == "HTTP 400: No such customer: 'cus_alice'"
    assert waiting["account"] == BOB and waiting["state"] == "failing"
    assert "has no Stripe customer id" in waiting["last_error"]
    assert STRIPE_KEY not in waiting["last_error"]


async def test_summed_reports_count_each_row_once_and_keep_their_id_across_retries(
    store: SqlStore,
) -> None:
    await spend(store, USER, 10, 20, 30)
    await spend(store, BOB, 5)
    clock = Clock()
    clock.now += 120  # the calls' minute has closed
    sink = webhook(mode="summed", period_seconds=60, events=("meter_event",))
    hub = dispatcher(store, settings(sink), clock)
    sent: list[dict[str, object]] = []
    fail_first = {BOB}

    def answer(request: httpx.Request) -> httpx.Response:
        body = verify(request)
        sent.append(body)
        if body["account"] in fail_first:
            fail_first.discard(str(body["account"]))
            return httpx.Response(503)
        return httpx.Response(200)

    with respx.mock(assert_all_called=False) as mock:
        mock.post(HOOK).mock(side_effect=answer)
        await hub.round()
        # A charge of a closed minute that committed late: a report of its own.
        account = await Admin(store).ensure_account(USER)
        late = clock.now - 110
        await store.database.execute(
            "INSERT INTO meter_events (account_id, call_id, amount, created_at) "
            f"VALUES ({account}, 'late-call', 40, {late})"
        )
        clock.now += 10
        await hub.round()
        await hub.client.aclose()

    delivered: dict[str, dict[str, object]] = {str(b["id"]): b for b in sent}
    assert len(sent) == len(delivered) + 1  # bob's report, sent again with the same id
    per_account: defaultdict[object, int] = defaultdict(int)
    for body in delivered.values():
        assert body["type"] == "meter_event_summary"
        per_account[body["account"]] += int(str(body["units"]))
    assert dict(per_account) == {USER: 100, BOB: 5}
    rows = await OutboxStore(store).listing(everything=True, limit=20)
    assert {r["state"] for r in rows} == {"delivered"}
    by_report: defaultdict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_report[row["report"]].append(row["id"])
    assert set(by_report) == set(delivered)  # every row in exactly one report sent
    for report, ids in by_report.items():
        body = delivered[report]
        account_id = await Admin(store).ensure_account(str(body["account"]))
        start = int(str(body["period_start"]))
        assert report == report_id("hook", "meter_event", account_id, start, ids)
