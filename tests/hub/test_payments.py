"""Payments grant credits: Stripe's webhook (signed with Stripe's own library) and a generic
Standard Webhooks top-up, each event granting once however often it is delivered."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from typing import Any

import anyio
import httpx
import pytest
import respx
from stripe import WebhookSignature

from hub.payments.settings import PaymentSettings
from tests.conftest import USER, Hub, make_settings, start_hub

pytestmark = pytest.mark.anyio

STRIPE_SECRET = "whsec_test_0123456789abcdef"
TOPUP_SECRET = "whsec_" + base64.b64encode(b"sixteen-byte-key-for-tests").decode()
CAROL = "did:abt:carol"
PAY_URL = "https://buy.example/link?client_reference_id={did}"


@pytest.fixture
async def paying_hub(db_url: str, mock_upstream: respx.MockRouter) -> Any:
    payments = PaymentSettings(
        payment_url=PAY_URL,
        stripe_webhook_secret=STRIPE_SECRET,
        topup_webhook_secret=TOPUP_SECRET,
    )
    settings = replace(make_settings(db_url), payments=payments)
    started = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    yield started
    await started.client.aclose()
    await started.app.shutdown()


def _checkout(event_id: str, did: str | None, cents: int, **more: Any) -> dict[str, Any]:
    session = {
        "id": f"cs_{event_id}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "client_reference_id": did,
        "customer": "cus_carol",
        "amount_total": cents,
        "currency": "usd",
        "metadata": {},
        **more,
    }
    return {"id": event_id, "type": "checkout.session.completed", "data": {"object": session}}


async def _stripe(
    hub: Hub, event: dict[str, Any], *, secret: str = STRIPE_SECRET, **kw: Any
) -> httpx.Response:
    payload = json.dumps(event)
    header = WebhookSignature.generate_signature_header(payload, secret, **kw)
    return await hub.client.post(
        "/api/payments/stripe/webhook",
        content=payload,
        headers={"stripe-signature": header, "authorization": ""},
    )


async def _balance(hub: Hub, did: str) -> int:
    return (await hub.admin.ledger(did))["balance"]


async def test_a_paid_checkout_grants_once_however_often_stripe_delivers_it(
    paying_hub: Hub,
) -> None:
    event = _checkout("evt_1", CAROL, 1250)  # $12.50 at 1 credit a dollar
    answers = [await _stripe(paying_hub, event) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["granted"] for a in answers] == [True, False, False]
    ledger = await paying_hub.admin.ledger(CAROL)
    assert ledger["balance"] == ledger["granted"] == 125 * 10**9  # 12.5 credits in units
    grants = await paying_hub.admin.list_grants(CAROL)
    assert len(grants) == 1 and "cs_evt_1" in grants[0]["note"]


async def test_racing_deliveries_of_one_event_grant_once(paying_hub: Hub) -> None:
    event = _checkout("evt_race", CAROL, 500)
    answers = await asyncio.gather(*(_stripe(paying_hub, event) for _ in range(8)))

    assert all(a.status_code == 200 for a in answers)
    assert sum(a.json()["granted"] for a in answers) == 1
    assert await _balance(paying_hub, CAROL) == 5 * 10**10


async def test_bad_or_stale_signatures_are_refused_and_grant_nothing(paying_hub: Hub) -> None:
    event = _checkout("evt_bad", CAROL, 1000)
    forged = await _stripe(paying_hub, event, secret="whsec_someone_else_entirely")
    stale = await _stripe(paying_hub, event, timestamp=int(time.time()) - 600)
    unsigned = await paying_hub.client.post("/api/payments/stripe/webhook", json=event)
    payload = json.dumps(event)
    header = WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
    tampered = await paying_hub.client.post(
        "/api/payments/stripe/webhook",
        content=payload.replace("1000", "100000"),
        headers={"stripe-signature": header},
    )

    for answer in (forged, stale, unsigned, tampered):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_signature"
        assert STRIPE_SECRET not in answer.text
    assert "300 s" in stale.json()["error"]["message"]
    assert await _balance(paying_hub, CAROL) == 0


async def test_events_that_pay_nothing_are_acknowledged_and_grant_nothing(
    paying_hub: Hub,
) -> None:
    unpaid = _checkout("evt_unpaid", CAROL, 900, payment_status="unpaid")
    subscription = _checkout("evt_sub", CAROL, 900, mode="subscription")
    euros = _checkout("evt_eur", CAROL, 900, currency="eur")
    other = {"id": "evt_other", "type": "customer.created", "data": {"object": {"id": "cus_x"}}}
    answers = [await _stripe(paying_hub, e) for e in (unpaid, subscription, euros, other)]

    assert [a.status_code for a in answers] == [200] * 4
    assert not any(a.json()["granted"] for a in answers)
    assert "eur" in answers[2].json()["reason"]
    assert await _balance(paying_hub, CAROL) == 0


async def test_invoices_find_the_account_by_its_stripe_customer(paying_hub: Hub) -> None:
    invoice = {
        "id": "evt_inv",
        "type": "invoice.paid",
        "data": {
            "object": {
                "id": "in_1",
                "customer": "cus_carol",
                "amount_paid": 2000,
                "currency": "usd",
                "metadata": {},
            }
        },
    }
    before_link = await _stripe(paying_hub, invoice)
    linked = await _stripe(paying_hub, _checkout("evt_first", CAROL, 100))
    retried = await _stripe(paying_hub, invoice)

    # Unknown customer: not 2xx, so Stripe retries it once the account is linked.
    assert before_link.status_code == 404
    assert before_link.json()["error"]["code"] == "unknown_customer"
    assert linked.json()["granted"] and retried.json()["granted"]
    assert await _balance(paying_hub, CAROL) == 21 * 10**10  # $1 + $20


async def test_metadata_credits_sell_a_bundle(paying_hub: Hub) -> None:
    bundle = _checkout("evt_bundle", CAROL, 999, metadata={"credits": "15"})
    assert (await _stripe(paying_hub, bundle)).json()["granted"]
    assert await _balance(paying_hub, CAROL) == 15 * 10**10


def _standard_headers(message_id: str, body: bytes, secret: str, sent: int) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{sent}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(sent),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


async def test_a_signed_top_up_grants_once_per_webhook_id(paying_hub: Hub) -> None:
    body = json.dumps({"did": CAROL, "credits": "3.5", "note": "paid by invoice 42"}).encode()
    now = int(time.time())
    headers = _standard_headers("msg_1", body, TOPUP_SECRET, now)
    first = await paying_hub.client.post("/api/payments/topup", content=body, headers=headers)
    again = await paying_hub.client.post("/api/payments/topup", content=body, headers=headers)
    old = _standard_headers("msg_2", body, TOPUP_SECRET, now - 3600)
    stale = await paying_hub.client.post("/api/payments/topup", content=body, headers=old)
    wrong = _standard_headers("msg_3", body, "whsec_" + base64.b64encode(b"x" * 24).decode(), now)
    forged = await paying_hub.client.post("/api/payments/topup", content=body, headers=wrong)

    assert first.json()["granted"] and not again.json()["granted"]
    assert stale.status_code == forged.status_code == 400
    assert await _balance(paying_hub, CAROL) == 35 * 10**9


async def test_the_402_answer_carries_the_payment_link_for_the_account(
    paying_hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    await paying_hub.admin.grant(USER, -(await _balance(paying_hub, USER)), "spent")
    await anyio.sleep(0.3)  # past the balance cache
    refused = await paying_hub.chat()

    assert refused.status_code == 402
    link = PAY_URL.replace("{did}", "did%3Aabt%3Aalice")
    error = refused.json()["error"]
    assert error["code"] == "insufficient_credits"
    assert f"Buy credits at {link} to continue." in error["message"]
    assert refused.headers["x-aigne-hub-payment-url"] == link


async def test_payments_not_set_up_answer_404(hub: Hub) -> None:
    answer = await hub.client.post("/api/payments/stripe/webhook", content=b"{}")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


async def test_new_accounts_get_the_welcome_credits_once(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    welcome = 5 * 10**10
    settings = replace(make_settings(db_url), payments=PaymentSettings(welcome_credits=welcome))
    hub = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    try:
        await hub.admin.create_key(CAROL)
        await hub.admin.create_key(CAROL)  # her account exists now: nothing more
        await hub.admin.grant(CAROL, 10**10, "bought")
        ledger = await hub.admin.ledger(CAROL)
        grants = await hub.admin.list_grants(CAROL)
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    assert ledger["balance"] == ledger["granted"] == welcome + 10**10
    assert sorted(g["note"] for g in grants) == ["bought", "welcome credits"]
