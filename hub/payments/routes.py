"""POST /api/payments/stripe/webhook and POST /api/payments/topup: signed deliveries from a
payment service, each granting credits once per event id.

Answers follow what payment services expect: 2xx when the event is taken (granted, already
granted, or one that grants nothing), 400 for a delivery that is not signed right or not
readable (the service shows it as failed and stops nothing else), and 404 for a payment
whose account cannot be found yet, so that the service retries it later rather than the
money being dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from hub import bounds
from hub.bodies import read_body
from hub.json_route import JsonRoute
from hub.payments.settings import PaymentSettings
from hub.payments.signatures import BadSignature, verify_standard, verify_stripe
from hub.payments.stripe_events import Ignored, Payment, read_event
from hub.store.payments import Payments
from middleware.errors import HubError

log = logging.getLogger("hub.payments")

STRIPE_WEBHOOK = "/api/payments/stripe/webhook"
TOPUP_WEBHOOK = "/api/payments/topup"
PATHS = (STRIPE_WEBHOOK, TOPUP_WEBHOOK)
# Stripe's events are a few kilobytes; a checkout with many line items stays far below this.
MAX_EVENT_BYTES = 256 * 1024


def payment_routes(
    payments: Payments, settings: PaymentSettings, clock: Callable[[], float] = time.time
) -> list[BaseRoute]:
    async def stripe_webhook(request: Request) -> JSONResponse:
        secret = settings.stripe_webhook_secret
        if secret is None:
            raise HubError(404, "not_found", "Stripe payments are not set up on this hub.")
        body = await read_body(request, MAX_EVENT_BYTES)
        try:
            verify_stripe(request.headers.get("stripe-signature"), body, secret, clock())
        except BadSignature as exc:
            raise HubError(400, "invalid_signature", f"Refused: {exc}.") from exc
        found = read_event(
            _json(body), credits_per_unit=settings.credits_per_unit, currency=settings.currency
        )
        if isinstance(found, Ignored):
            log.info("stripe event ignored: %s", found.reason)
            return JSONResponse({"received": True, "granted": False, "reason": found.reason})
        return await _grant(payments, "stripe", found)

    async def topup_webhook(request: Request) -> JSONResponse:
        secret = settings.topup_webhook_secret
        if secret is None:
            raise HubError(404, "not_found", "Top-up webhooks are not set up on this hub.")
        body = await read_body(request, MAX_EVENT_BYTES)
        headers = request.headers
        message_id = headers.get("webhook-id")
        try:
            verify_standard(
                message_id,
                headers.get("webhook-timestamp"),
                headers.get("webhook-signature"),
                body,
                secret,
                clock(),
            )
        except BadSignature as exc:
            raise HubError(400, "invalid_signature", f"Refused: {exc}.") from exc
        event = _json(body)
        if not isinstance(event, dict):
            raise HubError(400, "invalid_event", "The body must be a JSON object.")
        did = bounds.text(event.get("did"), "did")
        units = bounds.grant_amount(event.get("credits"), "credits")
        note = bounds.optional_text(event.get("note"), "note", 400) or "top-up"
        return await _grant(payments, "topup", Payment(str(message_id), did, None, units, note))

    return [
        JsonRoute(STRIPE_WEBHOOK, stripe_webhook, methods=["POST"]),
        JsonRoute(TOPUP_WEBHOOK, topup_webhook, methods=["POST"]),
    ]


async def _grant(payments: Payments, source: str, payment: Payment) -> JSONResponse:
    done = await payments.record(source, payment)
    if done.status == "unknown_customer":
        raise HubError(
            404,
            "unknown_customer",
            "No account has this Stripe customer yet; the payment will be granted when it "
            "is retried after the account is linked.",
        )
    granted = done.status == "granted"
    if granted:
        log.info(
            "%s payment %s granted %d units to %s",
            source,
            payment.event_id,
            payment.units,
            done.did,
        )
    return JSONResponse({"received": True, "granted": granted, "duplicate": not granted})


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HubError(400, "invalid_json", "The body is not JSON.") from exc
